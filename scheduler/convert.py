"""Conversions between the gRPC messages and the scheduler's own types.

An AllocateRequest's proto3 JSON form is exactly the `deft schedule` instance format, so both
paths share one validator (`parse_instance`) and report the same field names.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from google.protobuf import json_format

from lola_deft.protos.deft.v1 import scheduler_pb2
from lola_deft.scheduler.allocation import Allocation
from lola_deft.scheduler.instance import DeviceColumns, Instance, parse_instance

SCALAR_FIELDS = ("blocks", "local_iterations", "payload_bits", "bandwidth_hz")


def instance_from_request(request: scheduler_pb2.AllocateRequest) -> Instance:
    """Validate a request as `parse_instance` validates JSON (the same checks and field names:
    absent optional fields stay absent), reading the devices field by field, not through a
    JSON document: their block_seconds come out of the repeated fields in one pass."""
    doc: dict[str, Any] = {f: getattr(request, f) for f in SCALAR_FIELDS if request.HasField(f)}
    for field in ("block_memory_bytes", "block_seconds"):
        if len(getattr(request, field)):
            doc[field] = list(getattr(request, field))
    devices = request.devices
    lengths = [len(device.block_seconds) for device in devices]
    flat = np.fromiter(
        itertools.chain.from_iterable(device.block_seconds for device in devices),
        dtype=float,
        count=sum(lengths),
    )
    matrix = None
    if lengths and min(lengths) == max(lengths) > 0:
        matrix = flat.reshape(len(lengths), lengths[0])
        rows: list[Any] = list(matrix)
    else:
        offsets = np.cumsum([0, *lengths])
        rows = [
            flat[start : start + length] if length else None
            for start, length in zip(offsets, lengths, strict=False)
        ]
    columns = DeviceColumns(
        ids=[device.id for device in devices],
        memory_bytes=_optional(devices, "memory_bytes"),
        spectral_efficiency=_optional(devices, "spectral_efficiency"),
        compute_factor=_optional(devices, "compute_factor"),
        block_seconds=rows,
        seconds_matrix=matrix,
    )
    return parse_instance(doc, columns)


def _optional(devices: Any, field: str) -> list[Any]:
    """A scalar field of every device, None where a device left it out."""
    values = [getattr(device, field) for device in devices]
    present = [device.HasField(field) for device in devices]
    if all(present):
        return values
    return [value if here else None for value, here in zip(values, present, strict=True)]


def request_from_instance_doc(
    doc: dict[str, Any], policy: str = "", seed: int | None = None
) -> scheduler_pb2.AllocateRequest:
    """Build a request from the JSON instance format (json_format.ParseError if malformed)."""
    request = json_format.ParseDict(doc, scheduler_pb2.AllocateRequest())
    request.policy = policy
    if seed is not None:
        request.seed = seed
    return request


def response_from_allocation(allocation: Allocation) -> scheduler_pb2.AllocateResponse:
    doc = allocation.to_json()
    return scheduler_pb2.AllocateResponse(
        policy=doc["policy"],
        latency_s=doc["latency_s"],
        solve_seconds=doc["solve_seconds"],
        assignment=[scheduler_pb2.BlockAssignment(**entry) for entry in doc["assignment"]],
    )


def response_to_json(response: scheduler_pb2.AllocateResponse) -> dict[str, Any]:
    """The same JSON `deft schedule` prints locally, from a remote answer."""
    return {
        "policy": response.policy,
        "latency_s": response.latency_s,
        "solve_seconds": response.solve_seconds,
        "assignment": [
            {
                "block": entry.block,
                "device": entry.device,
                "bandwidth_hz": entry.bandwidth_hz,
                "latency_s": entry.latency_s,
                "compute_s": entry.compute_s,
                "upload_s": entry.upload_s,
            }
            for entry in response.assignment
        ],
    }

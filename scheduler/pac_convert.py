"""PAC+'s plan requests: one validator for the JSON documents of `deft schedule` and for the gRPC
messages (whose proto3 JSON form they are), and the answers in both forms.

A document names its planner with a top-level "plan": "pipeline" or "shares".
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from lola_deft.protos.deft.v1 import scheduler_pb2
from lola_deft.scheduler.errors import InstanceError
from lola_deft.scheduler.pac_planner import (
    MAX_UNITS,
    PipelineDevice,
    PipelineInstance,
    PipelinePlan,
    SharesPlan,
    plan_pipeline,
    plan_shares,
)

PLANS = ("pipeline", "shares")
# Their metric labels (beside the policies'): a fixed set.
PIPELINE_LABEL = "pac-pipeline"
SHARES_LABEL = "pac-shares"
MAX_DEVICES = 100_000
MAX_TOTAL_SAMPLES = 100_000


@dataclass(frozen=True)
class SharesInstance:
    device_ids: tuple[str, ...]
    seconds_per_sample: tuple[float, ...]
    fixed_seconds: tuple[float, ...]
    caps: tuple[int, ...]
    total: int


def _number(value: Any, field: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InstanceError(field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise InstanceError(field, f"must be a number, got {str(value)[:20]!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise InstanceError(field, f"must be finite and >= {minimum:g}, got {number:g}")
    return number


def _count(value: Any, field: str, maximum: int) -> int:
    number = _number(value, field)
    if number != int(number) or number > maximum:
        raise InstanceError(field, f"must be a whole number 0..{maximum}")
    return int(number)


def _required(doc: Mapping[str, Any], field: str) -> Any:
    if field not in doc:
        raise InstanceError(field, "required")
    return doc[field]


def _devices(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    devices = doc.get("devices")  # (over gRPC an empty list is no field at all)
    if not isinstance(devices, list) or not devices:
        raise InstanceError("devices", "must be a non-empty list")
    if len(devices) > MAX_DEVICES:
        raise InstanceError("devices", f"at most {MAX_DEVICES}")
    ids = []
    for index, device in enumerate(devices):
        if not isinstance(device, Mapping):
            raise InstanceError(f"devices[{index}]", "must be an object")
        ident = device.get("id")
        if not isinstance(ident, str) or not ident:
            raise InstanceError(f"devices[{index}].id", "must be a non-empty string")
        ids.append(ident)
    if len(set(ids)) != len(ids):
        raise InstanceError("devices", "device ids must be unique")
    return devices


def _series(doc: Mapping[str, Any], field: str) -> tuple[float, ...]:
    values = _required(doc, field)
    if not isinstance(values, list) or not values or len(values) > MAX_UNITS:
        raise InstanceError(field, f"must be a list of 1..{MAX_UNITS} numbers")
    return tuple(_number(value, f"{field}[{i}]") for i, value in enumerate(values))


def parse_pipeline(doc: Mapping[str, Any]) -> PipelineInstance:
    seconds, weights = _series(doc, "unit_seconds"), _series(doc, "unit_bytes")
    if len(seconds) != len(weights):
        raise InstanceError("unit_bytes", f"need {len(seconds)} values, one per unit")
    devices = tuple(
        PipelineDevice(
            device["id"],
            _number(_required(device, "memory_bytes"), f"devices[{i}].memory_bytes"),
            _number(
                device.get("compute_factor", 1.0), f"devices[{i}].compute_factor", minimum=1e-12
            ),
            _number(_required(device, "uplink_bps"), f"devices[{i}].uplink_bps", minimum=1e-12),
        )
        for i, device in enumerate(_devices(doc))
    )
    owner = _required(doc, "owner")
    if owner not in {device.device_id for device in devices}:
        raise InstanceError("owner", f"{str(owner)[:40]!r} is none of the devices")
    return PipelineInstance(
        seconds,
        weights,
        _number(_required(doc, "activation_bits"), "activation_bits"),
        _number(doc.get("working_bytes", 0.0), "working_bytes"),
        devices,
        owner,
    )


def parse_shares(doc: Mapping[str, Any]) -> SharesInstance:
    devices = _devices(doc)
    return SharesInstance(
        tuple(device["id"] for device in devices),
        tuple(
            _number(_required(d, "seconds_per_sample"), f"devices[{i}].seconds_per_sample")
            for i, d in enumerate(devices)
        ),
        tuple(
            _number(d.get("fixed_seconds", 0.0), f"devices[{i}].fixed_seconds")
            for i, d in enumerate(devices)
        ),
        tuple(
            _count(_required(d, "samples"), f"devices[{i}].samples", 2**63)
            for i, d in enumerate(devices)
        ),
        _count(_required(doc, "total_samples"), "total_samples", MAX_TOTAL_SAMPLES),
    )


def request_doc(message: Any) -> dict[str, Any]:
    """A request's proto3 JSON form (absent optional fields stay absent)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def pipeline_response(
    plan: PipelinePlan, solve_seconds: float
) -> scheduler_pb2.PlanPipelineResponse:
    return scheduler_pb2.PlanPipelineResponse(
        stages=[
            scheduler_pb2.PipelineStage(
                device=stage.device_id,
                first_unit=stage.first_unit,
                last_unit=stage.last_unit,
                seconds=stage.seconds,
            )
            for stage in plan.stages
        ],
        bottleneck_s=plan.bottleneck_s,
        solve_seconds=solve_seconds,
    )


def shares_response(
    instance: SharesInstance, plan: SharesPlan, solve_seconds: float
) -> scheduler_pb2.PlanSharesResponse:
    return scheduler_pb2.PlanSharesResponse(
        shares=[
            scheduler_pb2.DeviceShare(
                device=ident,
                samples=count,
                seconds=instance.fixed_seconds[k] + count * instance.seconds_per_sample[k]
                if count
                else 0.0,
            )
            for k, (ident, count) in enumerate(zip(instance.device_ids, plan.shares, strict=True))
        ],
        makespan_s=plan.makespan_s,
        solve_seconds=solve_seconds,
    )


def response_json(response: Any) -> dict[str, Any]:
    """What `deft schedule` prints for a plan, local or remote alike (counts as numbers)."""
    if isinstance(response, scheduler_pb2.PlanPipelineResponse):
        return {
            "stages": [
                {
                    "device": stage.device,
                    "first_unit": stage.first_unit,
                    "last_unit": stage.last_unit,
                    "seconds": stage.seconds,
                }
                for stage in response.stages
            ],
            "bottleneck_s": response.bottleneck_s,
            "solve_seconds": response.solve_seconds,
        }
    return {
        "shares": [
            {"device": share.device, "samples": share.samples, "seconds": share.seconds}
            for share in response.shares
        ],
        "makespan_s": response.makespan_s,
        "solve_seconds": response.solve_seconds,
    }


def solve_pipeline(doc: Mapping[str, Any]) -> scheduler_pb2.PlanPipelineResponse:
    instance = parse_pipeline(doc)
    started = time.perf_counter()
    plan = plan_pipeline(instance)
    return pipeline_response(plan, time.perf_counter() - started)


def solve_shares(doc: Mapping[str, Any]) -> scheduler_pb2.PlanSharesResponse:
    instance = parse_shares(doc)
    started = time.perf_counter()
    plan = plan_shares(
        instance.seconds_per_sample, instance.fixed_seconds, instance.caps, instance.total
    )
    return shares_response(instance, plan, time.perf_counter() - started)

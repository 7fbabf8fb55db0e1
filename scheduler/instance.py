"""One round's scheduling instance: the paper's cost model, and parsing it from JSON-like data.

Cost model (paper Sections II-III): J[k,l] = M * d_l / f_k (or M * the device's own measured
seconds for block l), r_k = log2(1 + SNR_k), upload time S / (B_k r_k). Block l (1-based) is the
paper's depth index: block 1 has the shortest backward pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from lola_deft.scheduler.bounds import (
    BANDWIDTH_HZ,
    COMPUTE_FACTOR,
    MAX_BLOCKS,
    MAX_LOCAL_ITERATIONS,
    MEMORY_BYTES,
    PAYLOAD_BITS,
    SECONDS_PER_ITERATION,
    SPECTRAL_EFFICIENCY,
    Range,
)
from lola_deft.scheduler.errors import InstanceError

TOP_LEVEL_FIELDS = {
    "blocks",
    "block_memory_bytes",
    "block_seconds",
    "local_iterations",
    "payload_bits",
    "bandwidth_hz",
    "devices",
}
DEVICE_FIELDS = {"id", "memory_bytes", "compute_factor", "spectral_efficiency", "block_seconds"}


@dataclass(frozen=True, eq=False)
class Instance:
    """A validated instance. Arrays are read-only; indices are 0-based (block l is column l-1)."""

    device_ids: tuple[str, ...]
    device_memory: np.ndarray  # (K,) bytes available
    spectral_efficiency: np.ndarray  # (K,) r_k in bit/s/Hz, > 0
    compute_seconds: np.ndarray  # (K, L) J[k, l]: seconds for M local iterations on block l
    block_memory: np.ndarray  # (L,) bytes needed to train block l
    payload_bits: float  # S
    bandwidth_hz: float  # B
    local_iterations: int  # M

    def __post_init__(self) -> None:
        for name in ("device_memory", "spectral_efficiency", "compute_seconds", "block_memory"):
            array = np.array(getattr(self, name), dtype=float)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    @property
    def num_blocks(self) -> int:
        return int(self.block_memory.shape[0])

    @cached_property
    def fits(self) -> np.ndarray:
        """(K, L) bool: device k has the memory to train block l."""
        fits = self.block_memory[None, :] <= self.device_memory[:, None]
        fits.setflags(write=False)
        return fits

    def upload_seconds(self, devices: np.ndarray, bandwidth_hz: np.ndarray) -> np.ndarray:
        """S / (B_k r_k) for the given devices and their bandwidths (inf where B_k = 0)."""
        rate = np.asarray(bandwidth_hz, dtype=float) * self.spectral_efficiency[devices]
        with np.errstate(divide="ignore"):
            return np.where(rate > 0, self.payload_bits / np.maximum(rate, 1e-300), np.inf)

    @cached_property
    def equal_bandwidth_latency(self) -> np.ndarray:
        """(K, L) T[k,l] = J[k,l] + S*L/(B r_k), inf where memory does not fit (problem P1)."""
        upload = (
            self.payload_bits * self.num_blocks / (self.bandwidth_hz * self.spectral_efficiency)
        )
        latency = np.where(self.fits, self.compute_seconds + upload[:, None], np.inf)
        latency.setflags(write=False)  # shared by every policy solving this instance
        return latency

    @cached_property
    def depth_monotone(self) -> bool:
        """True when memory and compute never fall with depth: the paper's structural assumption.

        Then every device's feasible blocks under any latency threshold form a prefix 1..s_k,
        which is what CRUNCH and the O(KL) `ba` solver rely on.
        """
        memory_ok = bool(np.all(np.diff(self.block_memory) >= 0))
        compute_ok = bool(np.all(np.diff(self.compute_seconds, axis=1) >= 0))
        return memory_ok and compute_ok

    def first_depth_violation(self) -> str | None:
        """Human-readable description of where costs fall with depth, or None."""
        drops = np.nonzero(np.diff(self.block_memory) < 0)[0]
        if drops.size:
            block = int(drops[0]) + 2
            return f"block_memory_bytes falls from block {block - 1} to block {block}"
        rows, cols = np.nonzero(np.diff(self.compute_seconds, axis=1) < 0)
        if rows.size:
            device, block = self.device_ids[int(rows[0])], int(cols[0]) + 2
            return f"device {device!r} computes block {block} faster than block {block - 1}"
        return None


# How proto3 JSON (MessageToDict) spells non-finite doubles.
NON_FINITE_SPELLINGS = {"NaN", "Infinity", "-Infinity"}


def _is_number(value: Any) -> bool:
    """A JSON number, or a numpy float (float64 is a float): not a bool, str or None."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, field: str, legal: Range) -> float:
    if isinstance(value, str) and value in NON_FINITE_SPELLINGS:
        raise InstanceError(field, f"must be finite, got {value}")
    if not _is_number(value):
        raise InstanceError(field, f"must be a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    problem = legal.problem(number) if math.isfinite(number) else f"must be finite, got {value!r}"
    if problem is not None:
        raise InstanceError(field, problem)
    return number


def _integer(value: Any, field: str, *, minimum: int, maximum: int) -> int:
    if not _is_number(value) or not math.isfinite(value) or value != int(value):
        raise InstanceError(field, f"must be an integer, got {value!r}")
    if value < minimum:
        raise InstanceError(field, f"must be >= {minimum}, got {value!r}")
    if value > maximum:
        raise InstanceError(field, f"must be at most {maximum:,}, got {value!r}")
    return int(value)


def _vector(value: Any, field: str, length: int, legal: Range) -> np.ndarray:
    if not isinstance(value, (Sequence, np.ndarray)) or isinstance(value, (str, bytes)):
        raise InstanceError(field, f"must be a list of {length} numbers")
    if len(value) != length:
        raise InstanceError(field, f"must have {length} entries (one per block), got {len(value)}")
    array = _checked_array(value, legal)
    if array is not None:
        return array
    # Something is wrong: find the first entry at fault, to name it.
    if isinstance(value, np.ndarray):
        value = value.tolist()  # messages show 0.0, not np.float64(0.0)
    numbers = [_number(v, f"{field}[{i}]", legal) for i, v in enumerate(value)]
    return np.array(numbers)


NUMBER_TYPES = {int, float}


def _as_floats(values: Any) -> np.ndarray | None:
    """`values` as a float array when every entry is a number (None when one is not)."""
    if isinstance(values, np.ndarray):
        return values.astype(float, copy=False)
    if not set(map(type, values)) <= NUMBER_TYPES and not all(map(_is_number, values)):
        return None  # bool, str, None: not numbers
    try:
        return np.array(values, dtype=float)
    except OverflowError:
        return None


def _checked_array(values: Any, legal: Range) -> np.ndarray | None:
    """`values` as a float array when every entry is a number in its legal range, in one
    vectorised pass; None when any is not (the caller names which)."""
    array = _as_floats(values)
    if array is None or (array.size and not legal.holds(array)):
        return None
    return array


def _column(
    values: Sequence[Any],
    name: str,
    legal: Range,
    *,
    required: bool = True,
    indices: Sequence[int] | None = None,
) -> np.ndarray:
    """One numeric field of every device, validated in one pass (errors name the device by its
    position in the instance: `indices`, when these are some of its devices)."""
    array = _checked_array(values, legal) if None not in values else None
    if array is not None:
        return array
    for position, value in enumerate(values):
        index = indices[position] if indices is not None else position
        field = f"devices[{index}].{name}"
        if value is None:
            if required:
                raise InstanceError(field, "is required")
            continue
        _number(value, field, legal)
    # Only optional entries are missing: NaN marks them.
    return np.array([np.nan if v is None else float(v) for v in values])


def _require(doc: Mapping[str, Any], field: str, prefix: str = "") -> Any:
    if field not in doc or doc[field] is None:
        raise InstanceError(f"{prefix}{field}", "is required")
    return doc[field]


def _reject_unknown(doc: Mapping[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InstanceError(
            f"{prefix}{unknown[0]}", f"unknown field (expected one of {sorted(known)})"
        )


@dataclass
class DeviceColumns:
    """The devices of an instance, field by field (None where a device left a field out): the
    one form both the JSON and the protobuf paths hand to the validator. `seconds_matrix` is
    the (K, L) block_seconds when every device gave exactly L floats (the protobuf path reads
    them in one pass)."""

    ids: list[Any]
    memory_bytes: list[Any]
    spectral_efficiency: list[Any]
    compute_factor: list[Any]
    block_seconds: list[Any]
    seconds_matrix: np.ndarray | None = None

    @classmethod
    def from_documents(cls, devices: Any) -> DeviceColumns:
        if not isinstance(devices, Sequence) or isinstance(devices, (str, bytes)) or not devices:
            raise InstanceError("devices", "must be a non-empty list of device objects")
        for index, device in enumerate(devices):
            if not isinstance(device, Mapping):
                raise InstanceError(f"devices[{index}]", "must be a JSON object")
            if device.keys() - DEVICE_FIELDS:
                _reject_unknown(device, DEVICE_FIELDS, f"devices[{index}].")

        def column(field: str) -> list[Any]:
            return [device.get(field) for device in devices]

        return cls(
            ids=column("id"),
            memory_bytes=column("memory_bytes"),
            spectral_efficiency=column("spectral_efficiency"),
            compute_factor=column("compute_factor"),
            block_seconds=column("block_seconds"),
        )


def parse_instance(doc: Any, devices: DeviceColumns | None = None) -> Instance:
    """Validate a JSON-like instance (the `deft schedule` format) and build an Instance; with
    `devices`, the devices come as columns instead of doc["devices"].

    Raises InstanceError naming the first offending field; nothing is partially built.
    """
    if not isinstance(doc, Mapping):
        raise InstanceError("instance", f"must be a JSON object, got {type(doc).__name__}")
    _reject_unknown(doc, TOP_LEVEL_FIELDS, "")
    blocks = _integer(_require(doc, "blocks"), "blocks", minimum=1, maximum=MAX_BLOCKS)
    block_memory = _vector(
        _require(doc, "block_memory_bytes"), "block_memory_bytes", blocks, MEMORY_BYTES
    )
    iterations = _integer(
        _require(doc, "local_iterations"),
        "local_iterations",
        minimum=1,
        maximum=MAX_LOCAL_ITERATIONS,
    )
    payload_bits = _number(_require(doc, "payload_bits"), "payload_bits", PAYLOAD_BITS)
    bandwidth_hz = _number(_require(doc, "bandwidth_hz"), "bandwidth_hz", BANDWIDTH_HZ)
    reference_seconds = None
    if doc.get("block_seconds") is not None:
        reference_seconds = _vector(
            doc["block_seconds"], "block_seconds", blocks, SECONDS_PER_ITERATION
        )

    if devices is None:
        devices = DeviceColumns.from_documents(_require(doc, "devices"))
    elif not devices.ids:
        raise InstanceError("devices", "must be a non-empty list of device objects")
    ids = _device_ids(devices.ids)
    memory = _column(devices.memory_bytes, "memory_bytes", MEMORY_BYTES)
    efficiency = _column(devices.spectral_efficiency, "spectral_efficiency", SPECTRAL_EFFICIENCY)
    compute = iterations * _device_seconds(devices, blocks, reference_seconds)

    return Instance(
        device_ids=tuple(ids),
        device_memory=memory,
        spectral_efficiency=efficiency,
        compute_seconds=compute,
        block_memory=block_memory,
        payload_bits=payload_bits,
        bandwidth_hz=bandwidth_hz,
        local_iterations=iterations,
    )


def _device_ids(ids: list[Any]) -> list[str]:
    for index, device_id in enumerate(ids):
        if device_id is None:
            raise InstanceError(f"devices[{index}].id", "is required")
        if not isinstance(device_id, str) or not device_id.strip():
            raise InstanceError(
                f"devices[{index}].id", f"must be a non-empty string, got {device_id!r}"
            )
    checked: list[str] = ids  # every entry is a str (checked above)
    if len(set(checked)) != len(checked):
        seen: set[str] = set()
        for index, device_id in enumerate(checked):
            if device_id in seen:
                raise InstanceError(f"devices[{index}].id", f"duplicate device id {device_id!r}")
            seen.add(device_id)
    return checked


def _device_seconds(
    devices: DeviceColumns, blocks: int, reference: np.ndarray | None
) -> np.ndarray:
    """(K, L) seconds per iteration: each device's own measurement, else the reference
    divided by its compute_factor."""
    matrix = devices.seconds_matrix
    if matrix is not None and matrix.shape[1] == blocks and SECONDS_PER_ITERATION.holds(matrix):
        return np.array(matrix, dtype=float)
    own = devices.block_seconds
    seconds = np.empty((len(own), blocks))
    measured = np.array([row is not None for row in own], dtype=bool)
    if measured.any():
        rows = [row for row in own if row is not None]
        block = _checked_matrix(rows, blocks)
        if block is None:  # name the device and entry at fault
            for index, row in enumerate(own):
                if row is not None:
                    _vector(row, f"devices[{index}].block_seconds", blocks, SECONDS_PER_ITERATION)
            raise AssertionError("unreachable: some row failed the vectorised check")
        seconds[measured] = block
    if not measured.all():
        missing = np.flatnonzero(~measured)
        if reference is None:
            raise InstanceError(
                "block_seconds",
                f"is required because devices[{int(missing[0])}].block_seconds is not given",
            )
        indices = [int(i) for i in missing]
        factors = _column(
            [devices.compute_factor[i] for i in indices],
            "compute_factor",
            COMPUTE_FACTOR,
            indices=indices,
        )
        seconds[missing] = reference[None, :] / factors[:, None]
    return seconds


def _checked_matrix(rows: list[Any], blocks: int) -> np.ndarray | None:
    """Rows of `blocks` legal seconds as one (R, L) array, checked in C-level passes; None when
    any row or entry is wrong (the caller then names it)."""
    if not all(isinstance(row, (np.ndarray, list)) and len(row) == blocks for row in rows):
        return None
    if all(isinstance(row, np.ndarray) for row in rows):
        matrix = np.stack(rows).astype(float, copy=False)
    else:
        flat = _as_floats(list(itertools.chain.from_iterable(rows)))
        if flat is None:
            return None
        matrix = flat.reshape(len(rows), blocks)
    return matrix if SECONDS_PER_ITERATION.holds(matrix) else None

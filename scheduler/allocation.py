"""The result of a policy: which device trains each block and with how much bandwidth.

Every allocation is built through `make_allocation`, which checks the constraints of problems P1/P2
(each block once, distinct devices, memory fits, bandwidth within budget), so no policy can hand
out an invalid plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lola_deft.scheduler.instance import Instance

# Bandwidth sums are compared with this relative slack: policies compute them in floating point.
BANDWIDTH_TOLERANCE = 1e-9


class InvalidAllocationError(AssertionError):
    """A policy produced an allocation that breaks a constraint: a bug, never a user error."""


@dataclass(frozen=True, eq=False)
class Allocation:
    policy: str
    instance: Instance
    devices: np.ndarray  # (L,) device index training block l (0-based block index)
    bandwidth_hz: np.ndarray  # (L,) uplink bandwidth of that device
    compute_s: np.ndarray  # (L,)
    upload_s: np.ndarray  # (L,)
    solve_seconds: float = 0.0

    @property
    def device_latency_s(self) -> np.ndarray:
        return self.compute_s + self.upload_s

    @property
    def latency_s(self) -> float:
        """Round latency max_k (J_k + S / (B_k r_k)): what every policy minimises."""
        return float(np.max(self.device_latency_s))

    def to_json(self) -> dict[str, Any]:
        """The `deft schedule` output format (stable: users script against these names)."""
        ids = self.instance.device_ids
        return {
            "policy": self.policy,
            "latency_s": self.latency_s,
            "solve_seconds": self.solve_seconds,
            "assignment": [
                {
                    "block": block + 1,
                    "device": ids[int(self.devices[block])],
                    "bandwidth_hz": float(self.bandwidth_hz[block]),
                    "latency_s": float(self.device_latency_s[block]),
                    "compute_s": float(self.compute_s[block]),
                    "upload_s": float(self.upload_s[block]),
                }
                for block in range(self.instance.num_blocks)
            ],
        }


def make_allocation(
    instance: Instance,
    policy: str,
    devices: np.ndarray | list[int],
    bandwidth_hz: np.ndarray | list[float] | None = None,
) -> Allocation:
    """Validate a block-to-device map (and bandwidth; equal split when None) into an Allocation."""
    num_blocks = instance.num_blocks
    devices = np.asarray(devices, dtype=np.int64)
    if bandwidth_hz is None:
        bandwidth_hz = np.full(num_blocks, instance.bandwidth_hz / num_blocks)
    bandwidth_hz = np.asarray(bandwidth_hz, dtype=float)
    validate(instance, devices, bandwidth_hz)
    blocks = np.arange(num_blocks)
    return Allocation(
        policy=policy,
        instance=instance,
        devices=devices,
        bandwidth_hz=bandwidth_hz,
        compute_s=instance.compute_seconds[devices, blocks],
        upload_s=instance.upload_seconds(devices, bandwidth_hz),
    )


def validate(instance: Instance, devices: np.ndarray, bandwidth_hz: np.ndarray) -> None:
    """Raise InvalidAllocationError unless the allocation satisfies (C1)-(C3) and the budget."""
    num_blocks = instance.num_blocks
    if devices.shape != (num_blocks,) or bandwidth_hz.shape != (num_blocks,):
        raise InvalidAllocationError(f"expected {num_blocks} blocks, got {devices.shape}")
    if np.any(devices < 0) or np.any(devices >= instance.num_devices):
        raise InvalidAllocationError(f"device index out of range: {devices.tolist()}")
    if len(set(devices.tolist())) != num_blocks:
        raise InvalidAllocationError(f"a device got more than one block: {devices.tolist()}")
    misfits = np.nonzero(~instance.fits[devices, np.arange(num_blocks)])[0]
    if misfits.size:
        block = int(misfits[0])
        raise InvalidAllocationError(
            f"block {block + 1} does not fit in device {instance.device_ids[devices[block]]!r}"
        )
    if not np.all(np.isfinite(bandwidth_hz)) or np.any(bandwidth_hz <= 0):
        raise InvalidAllocationError(f"bandwidth must be positive: {bandwidth_hz.tolist()}")
    if bandwidth_hz.sum() > instance.bandwidth_hz * (1 + BANDWIDTH_TOLERANCE):
        raise InvalidAllocationError(
            f"bandwidth {bandwidth_hz.sum():g} Hz exceeds the budget {instance.bandwidth_hz:g} Hz"
        )

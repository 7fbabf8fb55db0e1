"""The paper's benchmark schemes (Section VI-A4) and a random allocation, all with equal bandwidth.

Two versions of each scheme:
- memory-safe (`comm-aware`, `comp-aware`, `random`): rank the devices by one criterion and hand
  the most demanding block first to the best remaining device whose memory fits. With block
  memory non-decreasing in depth this never hits the memory wall on a feasible instance (the
  fit sets are nested, so any fitting choice keeps Hall's condition); otherwise it can, and then
  says so.
- as the paper defines them (`comm-aware-paper`, `comp-aware-paper`): activate the L best
  devices by the criterion and give the most demanding block to the best of them, blind to
  memory; "solely computation-aware or communication-aware scheduling ... could result in
  hitting the memory wall", and then the round is infeasible (InfeasibleError names who).
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.errors import InfeasibleError
from lola_deft.scheduler.feasibility import format_bytes
from lola_deft.scheduler.instance import Instance


def greedy_by_rank(instance: Instance, order: np.ndarray, policy: str) -> np.ndarray:
    """Deepest block first, each to the first device in `order` that is free and fits."""
    devices = np.empty(instance.num_blocks, dtype=np.int64)
    free = np.ones(instance.num_devices, dtype=bool)
    for block in range(instance.num_blocks - 1, -1, -1):
        usable = order[free[order] & instance.fits[order, block]]
        if usable.size == 0:
            raise InfeasibleError(
                f"policy {policy} hit the memory wall: no free device fits block {block + 1}"
            )
        devices[block] = usable[0]
        free[usable[0]] = False
    return devices


def memory_blind(instance: Instance, order: np.ndarray, policy: str) -> np.ndarray:
    """The L best devices in `order`, the deepest block to the best; memory is not consulted
    until the plan is made, and a device given a block it cannot hold stops the round."""
    devices = order[: instance.num_blocks][::-1].astype(np.int64)  # block 1 gets the L-th best
    wall = np.nonzero(~instance.fits[devices, np.arange(instance.num_blocks)])[0]
    if wall.size:
        block = int(wall[-1])
        device = instance.device_ids[int(devices[block])]
        raise InfeasibleError(
            f"policy {policy} hit the memory wall: device {device} "
            f"({format_bytes(float(instance.device_memory[devices[block]]))}) was given block "
            f"{block + 1}, which needs {format_bytes(float(instance.block_memory[block]))}"
        )
    return devices


def channel_order(instance: Instance) -> np.ndarray:
    return np.argsort(-instance.spectral_efficiency, kind="stable")


def speed_order(instance: Instance) -> np.ndarray:
    """Fastest first, ranked by the deepest block's time (works for measured profiles)."""
    return np.argsort(instance.compute_seconds[:, -1], kind="stable")


def comm_aware_paper(instance: Instance) -> np.ndarray:
    return memory_blind(instance, channel_order(instance), "comm-aware-paper")


def comp_aware_paper(instance: Instance) -> np.ndarray:
    return memory_blind(instance, speed_order(instance), "comp-aware-paper")


def comm_aware(instance: Instance) -> np.ndarray:
    """Best channel (spectral efficiency) first."""
    return greedy_by_rank(instance, channel_order(instance), "comm-aware")


def comp_aware(instance: Instance) -> np.ndarray:
    """Fastest compute first."""
    return greedy_by_rank(instance, speed_order(instance), "comp-aware")


def random_allocation(instance: Instance, seed: int | None) -> np.ndarray:
    """Devices in a seeded random order."""
    order = np.random.default_rng(seed).permutation(instance.num_devices)
    return greedy_by_rank(instance, order, "random")

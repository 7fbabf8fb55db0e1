"""The paper's benchmark schemes (Section VI-A4) and a random allocation, all with equal bandwidth.

Each ranks the devices by one criterion and hands the most demanding block first to the best
remaining device whose memory fits. With block memory non-decreasing in depth this never hits the
memory wall on a feasible instance (the fit sets are nested, so any fitting choice keeps Hall's
condition); otherwise it can, and then says so.
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.errors import InfeasibleError
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


def comm_aware(instance: Instance) -> np.ndarray:
    """Best channel (spectral efficiency) first."""
    return greedy_by_rank(
        instance, np.argsort(-instance.spectral_efficiency, kind="stable"), "comm-aware"
    )


def comp_aware(instance: Instance) -> np.ndarray:
    """Fastest compute first, ranked by the deepest block's time (works for measured profiles)."""
    speed_rank = np.argsort(instance.compute_seconds[:, -1], kind="stable")
    return greedy_by_rank(instance, speed_rank, "comp-aware")


def random_allocation(instance: Instance, seed: int | None) -> np.ndarray:
    """Devices in a seeded random order."""
    order = np.random.default_rng(seed).permutation(instance.num_devices)
    return greedy_by_rank(instance, order, "random")

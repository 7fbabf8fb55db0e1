"""Bottleneck (min-max) assignment of L blocks to distinct devices over a (K, L) cost matrix.

Used by `ba` (problem P1) and as a building block of `jbba` and `dual-ascent`. Forbidden pairs
(memory does not fit) carry cost +inf.
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.errors import InfeasibleError
from lola_deft.scheduler.feasibility import match_blocks


def rows_non_decreasing(cost: np.ndarray) -> bool:
    """True when every row's costs never fall with depth (inf counts as the largest value)."""
    return bool(np.all(cost[:, 1:] >= cost[:, :-1]))


def nested_bottleneck(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Optimal bottleneck assignment when rows are non-decreasing, in O(KL).

    Under any threshold T each device's admissible blocks form a prefix 1..s_k, so the
    neighbourhoods are nested and Hall's condition reduces to: for every block l at least
    L-l+1 devices admit l. Hence T* = max_l of the (L-l+1)-th smallest cost in column l. Any
    device admissible under T* can then take the deepest unassigned block (nesting keeps Hall's
    condition true), so we give each block, deepest first, its cheapest free device.
    """
    num_devices, num_blocks = cost.shape
    if num_blocks > num_devices:
        raise InfeasibleError(f"{num_blocks} blocks need as many devices, got {num_devices}")
    # A private copy, one contiguous row per block (faster partitions); the greedy below writes it.
    by_block = np.array(cost.T, order="C", copy=True)
    thresholds = np.empty(num_blocks)
    for block in range(num_blocks):
        needed = num_blocks - block
        thresholds[block] = np.partition(by_block[block], needed - 1)[needed - 1]
    optimum = float(thresholds.max())
    if not np.isfinite(optimum):
        raise InfeasibleError("no assignment of blocks to devices with enough memory exists")
    devices = np.empty(num_blocks, dtype=np.int64)
    for block in range(num_blocks - 1, -1, -1):
        device = int(np.argmin(by_block[block]))
        devices[block] = device
        by_block[:, device] = np.inf  # taken
    return optimum, devices


def general_bottleneck(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact bottleneck assignment for any cost matrix: threshold search plus bipartite matching."""
    finite = np.isfinite(cost)
    if not np.all(finite.any(axis=0)):
        raise InfeasibleError("some block fits on no device")
    lower = float(np.max(np.min(cost, axis=0)))  # every block needs at least its cheapest device
    candidates = np.unique(cost[finite & (cost >= lower)])
    low, high = 0, candidates.size - 1
    best = match_blocks(cost <= candidates[high])
    if np.any(best < 0):
        raise InfeasibleError("no assignment of blocks to devices with enough memory exists")
    while low < high:
        middle = (low + high) // 2
        matching = match_blocks(cost <= candidates[middle])
        if np.all(matching >= 0):
            high, best = middle, matching
        else:
            low = middle + 1
    return float(candidates[high]), best.astype(np.int64)


def bottleneck_assignment(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Minimise max cost over assignments of every block to a distinct device."""
    if rows_non_decreasing(cost):
        return nested_bottleneck(cost)
    return general_bottleneck(cost)

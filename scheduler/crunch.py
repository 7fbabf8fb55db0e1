"""CRUNCH, the paper's Algorithm 2 (Cutting-RecoUNting-CHecking), as written, for comparison.

Q starts as the equal-bandwidth latency T[k,l] with memory-infeasible pairs removed (eq. 9).
Each iteration cuts the largest remaining element, recounts the row's non-zeros s_k (eq. 11) and
checks Proposition 1: pi(K-L+l) >= l for all l, i.e. at least L-l+1 devices keep s_k >= l. The
first cut that breaks the check fixes T_th; blocks go to the devices kappa_pi(K-L+l) of the last
feasible counts (eq. 13). One cut costs O(K) (max over the rows' last elements), so the whole run
is the paper's O(K^2 L); `ba` returns the same optimum in O(KL).
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.bottleneck import rows_non_decreasing
from lola_deft.scheduler.errors import InfeasibleError, InstanceError


def crunch(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Run Algorithm 2 on a (K, L) latency matrix (inf = memory does not fit)."""
    num_devices, num_blocks = cost.shape
    if not rows_non_decreasing(cost):
        raise InstanceError(
            "policy",
            "crunch needs every device's latency and memory to be non-decreasing in block depth "
            "(the paper's eq. 10); use policy 'ba', which is exact for any costs",
        )
    counts = np.isfinite(cost).sum(axis=1)  # s_k: non-zeros of row k in Q (a prefix, eq. 10)
    # devices_reaching[l] = #{k : s_k >= l}; Proposition 1 <=> devices_reaching[l] >= L-l+1.
    devices_reaching = np.zeros(num_blocks + 2, dtype=np.int64)
    np.add.at(devices_reaching, counts, 1)
    devices_reaching = np.cumsum(devices_reaching[::-1])[::-1]
    required = num_blocks - np.arange(1, num_blocks + 1) + 1

    def feasible() -> bool:
        return bool(np.all(devices_reaching[1 : num_blocks + 1] >= required))

    if num_devices < num_blocks or not feasible():
        raise InfeasibleError("no assignment of blocks to devices with enough memory exists")

    row_last = np.where(
        counts > 0, cost[np.arange(num_devices), np.maximum(counts - 1, 0)], -np.inf
    )
    threshold = float(np.max(row_last))
    while True:
        # Cutting: the largest element of Q is the last non-zero of some row (monotone rows).
        device = int(np.argmax(row_last))
        threshold = float(row_last[device])
        # Recounting.
        devices_reaching[counts[device]] -= 1
        counts[device] -= 1
        # Checking.
        if not feasible():
            counts[device] += 1
            devices_reaching[counts[device]] += 1
            break
        row_last[device] = cost[device, counts[device] - 1] if counts[device] > 0 else -np.inf

    # Output (eq. 13): sort devices by s_k ascending; block l goes to the (K-L+l)-th of them.
    order = np.argsort(counts, kind="stable")
    devices = order[num_devices - num_blocks :].astype(np.int64)
    return threshold, devices

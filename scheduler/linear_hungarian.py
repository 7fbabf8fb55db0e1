"""The paper's reference solver for problem P1 (Section IV-A): linear search over the candidate
latency thresholds, each checked by a Hungarian assignment.

The thresholds are the distinct equal-bandwidth latencies T[k, l], tried in increasing order;
the first one under which every block can go to a distinct device with T[k, l] <= threshold is
the optimum. Feasibility is a minimum-cost assignment (scipy's linear_sum_assignment, a
Hungarian-type solver) of blocks to devices with cost 0 for admissible pairs and 1 otherwise:
feasible when the cost is 0. O(KL) thresholds times O(max(K, L)^3) each: the complexity the
paper's CRUNCH avoids. Kept as the reference `ba` and `crunch` are checked against, and as a
policy so its cost can be measured (`deft reproduce`, `make bench`).
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.errors import InfeasibleError


def admissible_assignment(allowed: np.ndarray) -> np.ndarray | None:
    """Block -> distinct device over allowed (K, L) pairs, or None when there is none."""
    from scipy.optimize import linear_sum_assignment

    cost = np.where(allowed.T, 0.0, 1.0)  # (L, K): every block gets a device
    blocks, devices = linear_sum_assignment(cost)
    if cost[blocks, devices].sum() > 0:
        return None
    result = np.empty(allowed.shape[1], dtype=np.int64)
    result[blocks] = devices
    return result


def linear_search_hungarian(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Optimal min-max assignment of every block to a distinct device over a (K, L) cost
    matrix (inf: memory does not fit), by the paper's linear search."""
    for threshold in np.unique(cost[np.isfinite(cost)]):
        devices = admissible_assignment(cost <= threshold)
        if devices is not None:
            return float(threshold), devices
    raise InfeasibleError("no assignment of blocks to devices with enough memory exists")

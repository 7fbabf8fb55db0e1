"""Exact joint bandwidth-and-block allocation (problem P2), the `jbba` policy.

The paper calls P2 NP-hard and gives a dual-ascent heuristic; it is solvable exactly. For a
round latency T, the least total bandwidth that lets every block finish by T is

    g(T) = min over assignments A of  sum_{(k,l) in A} S / (r_k (T - J[k,l]))

over pairs with J[k,l] < T whose memory fits: a min-cost assignment. g only falls as T grows,
and the optimum is the smallest T with g(T) <= B. We find it by a bracketed root search whose
steps are exact: at a feasible T with optimal assignment A, the latency T_A at which A alone uses
exactly B (a 1-D root) is again feasible and no larger (Dinkelbach's method). When g(T_A) = B
no smaller T can be feasible, since every assignment's bandwidth rises strictly as T falls, so
T_A is optimal; the steps never revisit an assignment, so this ends in few iterations. Each
device then gets exactly the bandwidth it needs to finish at T.

For large K each block needs only its L cheapest devices as candidates: an optimal assignment
never uses a worse one, as one of the L cheapest is always free to swap in.
"""

from __future__ import annotations

import numpy as np

from lola_deft.scheduler.bottleneck import bottleneck_assignment
from lola_deft.scheduler.errors import InfeasibleError
from lola_deft.scheduler.instance import Instance

RELATIVE_PRECISION = 1e-9
MAX_STEPS = 200


def bandwidth_cost(instance: Instance, latency: float) -> np.ndarray:
    """(K, L) bandwidth device k needs to finish block l by `latency` (inf where impossible)."""
    slack = latency - instance.compute_seconds
    usable = instance.fits & (slack > 0)
    rate_per_hz = instance.spectral_efficiency[:, None] * np.where(usable, slack, 1.0)
    return np.where(usable, instance.payload_bits / rate_per_hz, np.inf)


def candidate_devices(cost: np.ndarray) -> np.ndarray:
    """Indices of the devices that are among some block's L cheapest (all devices if K <= L^2)."""
    num_devices, num_blocks = cost.shape
    if num_devices <= num_blocks * num_blocks:
        return np.arange(num_devices)
    cheapest = np.argpartition(cost, num_blocks - 1, axis=0)[:num_blocks]
    return np.unique(cheapest)


def min_bandwidth_assignment(instance: Instance, latency: float) -> tuple[float, np.ndarray]:
    """g(latency) and the assignment achieving it; (inf, []) when no assignment meets latency."""
    cost = bandwidth_cost(instance, latency)
    candidates = candidate_devices(cost)
    sub = cost[candidates].T  # (L, C): rows are blocks
    from scipy.optimize import linear_sum_assignment  # imported on first use: CLI start-up

    try:
        blocks, columns = linear_sum_assignment(sub)
    except ValueError:  # scipy: "cost matrix is infeasible"
        return np.inf, np.empty(0, dtype=np.int64)
    total = float(sub[blocks, columns].sum())
    devices = np.empty(instance.num_blocks, dtype=np.int64)
    devices[blocks] = candidates[columns]
    return total, devices


def latency_for_assignment(instance: Instance, devices: np.ndarray, upper: float) -> float:
    """The latency T at which this assignment needs exactly the whole budget B.

    Solves sum_k S / (r_k (T - J_k)) = B. At T = max_k (J_k + S/(r_k B)) the sum is >= B (that
    device alone would need all of B); at `upper` it is <= B by the caller's guarantee.
    """
    blocks = np.arange(instance.num_blocks)
    compute = instance.compute_seconds[devices, blocks]
    bits_per_hz = instance.payload_bits / instance.spectral_efficiency[devices]
    budget = instance.bandwidth_hz

    def excess(latency: float) -> float:
        return float(np.sum(_bandwidth_needed(bits_per_hz, latency - compute)) - budget)

    lower = float(np.max(compute + bits_per_hz / budget))
    if excess(upper) >= 0:
        return upper
    if excess(lower) <= 0:
        return lower
    from scipy.optimize import brentq

    return float(brentq(excess, lower, upper, xtol=1e-15 * upper, rtol=4 * np.finfo(float).eps))


def jbba(instance: Instance) -> tuple[np.ndarray, np.ndarray, int]:
    """Optimal (devices, bandwidth) for P2; also returns the number of root-search steps."""
    # Equal bandwidth is one feasible split, so the P1 optimum brackets T* from above.
    latency, devices = bottleneck_assignment(instance.equal_bandwidth_latency)
    if not np.isfinite(latency):
        raise InfeasibleError("no assignment of blocks to devices with enough memory exists")
    steps = 0
    while True:
        steps += 1
        latency = latency_for_assignment(instance, devices, latency)
        needed, better = min_bandwidth_assignment(instance, latency)
        # Keep the current assignment unless another one needs clearly less bandwidth at T.
        if better.size == 0 or needed >= instance.bandwidth_hz * (1 - RELATIVE_PRECISION):
            break
        devices = better
        if steps >= MAX_STEPS:
            break
    return devices, _split_bandwidth(instance, devices, latency), steps


def _bandwidth_needed(bits_per_hz: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """S / (r_k slack_k), infinite where the slack is gone.

    When compute dwarfs the upload, T - J_k can round to exactly zero; that device then needs
    unbounded bandwidth, which is the answer, not a division error.
    """
    safe = np.where(slack > 0, slack, 1.0)
    return np.where(slack > 0, bits_per_hz / safe, np.inf)


def _split_bandwidth(instance: Instance, devices: np.ndarray, latency: float) -> np.ndarray:
    """Bandwidth that lets each device finish exactly at `latency`, never above the budget.

    T - J[k,l] can lose relative precision when the upload is a tiny part of T, so the sum may
    exceed B by rounding; stepping T up by a few ulps fixes that without slowing anyone else
    (shrinking every share instead would stretch every long upload).
    """
    blocks = np.arange(instance.num_blocks)
    compute = instance.compute_seconds[devices, blocks]
    bits_per_hz = instance.payload_bits / instance.spectral_efficiency[devices]
    for _ in range(64):
        bandwidth = _bandwidth_needed(bits_per_hz, latency - compute)
        if bandwidth.sum() <= instance.bandwidth_hz:
            return bandwidth
        latency = float(np.nextafter(latency, np.inf))
    return bandwidth * (instance.bandwidth_hz / bandwidth.sum())

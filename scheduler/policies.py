"""Policy registry: one entry point that checks feasibility, solves, times and validates."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lola_deft.scheduler.allocation import Allocation, make_allocation
from lola_deft.scheduler.baselines import (
    comm_aware,
    comm_aware_paper,
    comp_aware,
    comp_aware_paper,
    random_allocation,
)
from lola_deft.scheduler.bottleneck import bottleneck_assignment, rows_non_decreasing
from lola_deft.scheduler.crunch import crunch
from lola_deft.scheduler.dual_ascent import dual_ascent
from lola_deft.scheduler.errors import InstanceError
from lola_deft.scheduler.feasibility import check_feasible
from lola_deft.scheduler.instance import Instance
from lola_deft.scheduler.jbba import jbba
from lola_deft.scheduler.linear_hungarian import linear_search_hungarian
from lola_deft.scheduler.policy_names import DEFAULT_POLICY, POLICY_HELP

# Each solver returns (block -> device index, bandwidth per block or None for an equal split).
Solver = Callable[[Instance, "int | None"], tuple[np.ndarray, "np.ndarray | None"]]


def _ba(instance: Instance, seed: int | None) -> tuple[np.ndarray, None]:
    return bottleneck_assignment(instance.equal_bandwidth_latency)[1], None


def _crunch(instance: Instance, seed: int | None) -> tuple[np.ndarray, None]:
    cost = instance.equal_bandwidth_latency
    if not rows_non_decreasing(cost):
        raise InstanceError(
            "policy",
            f"crunch needs costs non-decreasing in block depth, but "
            f"{instance.first_depth_violation()}; use policy 'ba', which is exact for any costs",
        )
    return crunch(cost)[1], None


def _jbba(instance: Instance, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    devices, bandwidth, _ = jbba(instance)
    return devices, bandwidth


def _dual_ascent(instance: Instance, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    devices, bandwidth, _ = dual_ascent(instance)
    return devices, bandwidth


POLICIES: dict[str, Solver] = {
    "jbba": _jbba,
    "ba": _ba,
    "crunch": _crunch,
    "dual-ascent": _dual_ascent,
    "linear-hungarian": lambda instance, seed: (
        linear_search_hungarian(instance.equal_bandwidth_latency)[1],
        None,
    ),
    "comm-aware": lambda instance, seed: (comm_aware(instance), None),
    "comp-aware": lambda instance, seed: (comp_aware(instance), None),
    "comm-aware-paper": lambda instance, seed: (comm_aware_paper(instance), None),
    "comp-aware-paper": lambda instance, seed: (comp_aware_paper(instance), None),
    "random": lambda instance, seed: (random_allocation(instance, seed), None),
}


assert list(POLICIES) == list(POLICY_HELP), "every policy needs a description"


def solve(instance: Instance, policy: str = DEFAULT_POLICY, seed: int | None = None) -> Allocation:
    """Allocate blocks (and bandwidth) with `policy`.

    Raises InstanceError for an unknown policy or one that cannot take this instance, and
    InfeasibleError, saying why, when no allocation meets the memory constraints.
    """
    solver = POLICIES.get(policy)
    if solver is None:
        raise InstanceError(
            "policy", f"unknown policy {policy!r}; choose one of {sorted(POLICIES)}"
        )
    started = time.perf_counter()
    check_feasible(instance)
    devices, bandwidth = solver(instance, seed)
    allocation = make_allocation(instance, policy, devices, bandwidth)
    elapsed = time.perf_counter() - started
    return Allocation(**{**allocation.__dict__, "solve_seconds": elapsed})

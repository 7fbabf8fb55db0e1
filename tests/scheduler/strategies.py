"""Hypothesis strategies for small scheduling instances, and brute-force reference solvers."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import strategies as st
from scipy.optimize import brentq

from lola_deft.scheduler.bounds import (
    BANDWIDTH_HZ,
    COMPUTE_FACTOR,
    MAX_LOCAL_ITERATIONS,
    MEMORY_BYTES,
    PAYLOAD_BITS,
    SECONDS_PER_ITERATION,
    SPECTRAL_EFFICIENCY,
    Range,
)
from lola_deft.scheduler.instance import Instance, parse_instance

positive = st.floats(min_value=0.05, max_value=20.0, allow_nan=False, allow_infinity=False)


@st.composite
def instance_docs(
    draw: st.DrawFn, *, monotone: bool = True, max_devices: int = 6
) -> dict[str, Any]:
    """A `deft schedule` document; depth-monotone (the paper's setting) unless told otherwise."""
    num_blocks = draw(st.integers(1, 4))
    num_devices = draw(st.integers(num_blocks, max(num_blocks, max_devices)))
    block_memory = draw(st.lists(st.integers(1, 8), min_size=num_blocks, max_size=num_blocks))
    block_seconds = draw(st.lists(positive, min_size=num_blocks, max_size=num_blocks))
    if monotone:
        block_memory, block_seconds = sorted(block_memory), sorted(block_seconds)
    devices = []
    for k in range(num_devices):
        device: dict[str, Any] = {
            "id": f"d{k}",
            "memory_bytes": draw(st.integers(0, 8)),
            "spectral_efficiency": draw(st.floats(0.01, 10.0)),
        }
        if draw(st.booleans()):
            own = draw(st.lists(positive, min_size=num_blocks, max_size=num_blocks))
            device["block_seconds"] = sorted(own) if monotone else own
        else:
            device["compute_factor"] = draw(st.floats(0.1, 2.0))
        devices.append(device)
    return {
        "blocks": num_blocks,
        "block_memory_bytes": block_memory,
        "block_seconds": block_seconds,
        "local_iterations": draw(st.integers(1, 5)),
        "payload_bits": draw(st.floats(1.0, 1e6)),
        "bandwidth_hz": draw(st.floats(1e3, 1e8)),
        "devices": devices,
    }


def instances(**kwargs: Any) -> st.SearchStrategy[Instance]:
    return instance_docs(**kwargs).map(parse_instance)


def feasible_assignments(instance: Instance) -> list[tuple[int, ...]]:
    """Every block -> distinct device map that respects memory (block l is position l)."""
    blocks = range(instance.num_blocks)
    return [
        devices
        for devices in itertools.permutations(range(instance.num_devices), instance.num_blocks)
        if all(instance.fits[devices[b], b] for b in blocks)
    ]


def brute_force_equal_bandwidth(instance: Instance) -> float:
    """Optimum of P1 by enumeration (inf when infeasible)."""
    latency = instance.equal_bandwidth_latency
    return min(
        (
            max(latency[d, b] for b, d in enumerate(devices))
            for devices in feasible_assignments(instance)
        ),
        default=np.inf,
    )


def best_split_latency(instance: Instance, devices: tuple[int, ...]) -> float:
    """Optimal bandwidth split of a fixed assignment: all devices finish together, sum B_k = B."""
    compute = np.array([instance.compute_seconds[d, b] for b, d in enumerate(devices)])
    need = instance.payload_bits / instance.spectral_efficiency[list(devices)]

    def excess(t: float) -> float:
        return float(np.sum(need / (t - compute))) - instance.bandwidth_hz

    low = float(np.max(compute + need / instance.bandwidth_hz))
    if excess(low) <= 0:  # one device alone: it takes the whole band
        return low
    high = low + float(np.sum(need)) / instance.bandwidth_hz + 1.0
    while excess(high) > 0:
        high *= 2
    return float(brentq(excess, low, high, xtol=1e-14 * high, rtol=1e-15))


def brute_force_joint(instance: Instance) -> float:
    """Optimum of P2 by enumeration of assignments, each with its optimal bandwidth split."""
    return min(
        (best_split_latency(instance, devices) for devices in feasible_assignments(instance)),
        default=np.inf,
    )


def _edge_values(legal: Range, *, typical: float) -> st.SearchStrategy[float]:
    """Values at and next to the edges of a legal range, plus ordinary ones."""
    low = legal.low if legal.low_closed else float(np.nextafter(legal.low, np.inf))
    edges = [low, float(np.nextafter(low, np.inf)), legal.high, float(legal.high * (1 - 1e-12))]
    return st.one_of(
        st.sampled_from(edges),
        st.floats(low, legal.high, allow_nan=False, allow_infinity=False),
        st.floats(typical / 10, typical * 10),
    )


@st.composite
def extreme_instance_docs(draw: st.DrawFn, *, max_devices: int = 5) -> dict[str, Any]:
    """A legal document whose numbers sit anywhere in their ranges, the edges most of all:
    what an insider's report or a flaky sensor can put in front of the solvers."""
    seconds = _edge_values(SECONDS_PER_ITERATION, typical=1.0)
    memory = st.sampled_from([0.0, 1.0, 1e9, MEMORY_BYTES.high])
    num_blocks = draw(st.integers(1, 3))
    num_devices = draw(st.integers(num_blocks, max(num_blocks, max_devices)))
    devices = []
    for k in range(num_devices):
        device: dict[str, Any] = {
            "id": f"d{k}",
            "memory_bytes": draw(memory),
            "spectral_efficiency": draw(_edge_values(SPECTRAL_EFFICIENCY, typical=3.0)),
        }
        if draw(st.booleans()):
            device["block_seconds"] = draw(
                st.lists(seconds, min_size=num_blocks, max_size=num_blocks)
            )
        else:
            device["compute_factor"] = draw(_edge_values(COMPUTE_FACTOR, typical=1.0))
        devices.append(device)
    return {
        "blocks": num_blocks,
        "block_memory_bytes": sorted(
            draw(st.lists(memory, min_size=num_blocks, max_size=num_blocks))
        ),
        "block_seconds": draw(st.lists(seconds, min_size=num_blocks, max_size=num_blocks)),
        "local_iterations": draw(st.sampled_from([1, 10, 1000, MAX_LOCAL_ITERATIONS])),
        "payload_bits": draw(_edge_values(PAYLOAD_BITS, typical=1e6)),
        "bandwidth_hz": draw(_edge_values(BANDWIDTH_HZ, typical=1e7)),
        "devices": devices,
    }

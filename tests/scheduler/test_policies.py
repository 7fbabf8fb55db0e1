"""Every policy returns a valid allocation; infeasible and unsuitable instances say why."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from lola_deft.scheduler import (
    POLICIES,
    InfeasibleError,
    Instance,
    InstanceError,
    parse_instance,
    solve,
)
from lola_deft.scheduler.allocation import InvalidAllocationError, make_allocation
from lola_deft.scheduler.synthetic import PaperSetting, paper_round
from tests.scheduler.strategies import extreme_instance_docs, instances

EXAMPLE = Path(__file__).parents[2] / "scheduler" / "examples" / "paper_round.json"


def assert_valid(instance: Instance, policy: str) -> None:
    allocation = solve(instance, policy, seed=7)
    devices = allocation.devices
    assert sorted(devices.tolist()) == sorted(set(devices.tolist()))
    assert len(devices) == instance.num_blocks
    assert np.all(instance.block_memory <= instance.device_memory[devices])
    assert allocation.bandwidth_hz.sum() <= instance.bandwidth_hz * (1 + 1e-9)
    expected = instance.compute_seconds[devices, np.arange(instance.num_blocks)] + (
        instance.payload_bits / (allocation.bandwidth_hz * instance.spectral_efficiency[devices])
    )
    assert np.allclose(allocation.device_latency_s, expected)
    assert allocation.latency_s == pytest.approx(expected.max())
    doc = allocation.to_json()
    assert [entry["block"] for entry in doc["assignment"]] == list(
        range(1, instance.num_blocks + 1)
    )
    assert doc["policy"] == policy


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_is_valid_on_paper_rounds(policy: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        try:
            instance = parse_instance(paper_round(PaperSetting(), rng))
            assert_valid(instance, policy)
        except InfeasibleError:
            continue


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(monotone=False))
def test_every_policy_is_valid_or_explains_itself(instance: Instance) -> None:
    for policy in POLICIES:
        try:
            assert_valid(instance, policy)
        except InfeasibleError as error:
            assert str(error)
        except InstanceError as error:  # crunch on costs that fall with depth
            assert policy == "crunch" and error.field == "policy"
            assert "use policy 'ba'" in str(error)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extreme_instance_docs())
def test_every_legal_instance_gets_a_finite_answer_or_a_named_refusal(doc: dict) -> None:
    """Anywhere inside the legal ranges, every policy answers with a finite, valid allocation
    or refuses with the errors callers map to INVALID_ARGUMENT / FAILED_PRECONDITION, and no
    arithmetic warning reaches stderr (an overflow there would be a wrong answer later)."""
    instance = parse_instance(doc)
    for policy in POLICIES:
        if policy == "linear-hungarian" and instance.num_devices > 4:
            continue  # exhaustive over K x L latencies: the property is the same, only slower
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                allocation = solve(instance, policy, seed=3)
            except (InfeasibleError, InstanceError) as error:
                assert str(error)
                continue
        answer = allocation.to_json()
        assert math.isfinite(answer["latency_s"]) and answer["latency_s"] > 0
        for entry in answer["assignment"]:
            for key in ("bandwidth_hz", "latency_s", "compute_s", "upload_s"):
                assert math.isfinite(entry[key]) and entry[key] >= 0, (policy, key, entry)
        assert allocation.bandwidth_hz.sum() <= instance.bandwidth_hz * (1 + 1e-9)


def test_policies_order_on_the_embedded_round() -> None:
    instance = parse_instance(json.loads(EXAMPLE.read_text()))
    # The paper's memory-blind baselines hit the memory wall on this round (tested below).
    policies = [p for p in POLICIES if not p.endswith("-paper")]
    latency = {policy: solve(instance, policy, seed=0).latency_s for policy in policies}
    for policy in ("comm-aware-paper", "comp-aware-paper"):
        with pytest.raises(InfeasibleError, match="hit the memory wall"):
            solve(instance, policy)
    assert latency["crunch"] == pytest.approx(latency["ba"])
    assert latency["linear-hungarian"] == pytest.approx(latency["ba"])
    assert latency["jbba"] < latency["ba"]
    for policy in policies:
        assert latency["jbba"] <= latency[policy] * (1 + 1e-9)
        assert latency["ba"] <= latency[policy] * (1 + 1e-9) or policy in ("jbba", "dual-ascent")


def tiny(devices_memory: list[float], block_memory: list[float]) -> Instance:
    return parse_instance(
        {
            "blocks": len(block_memory),
            "block_memory_bytes": block_memory,
            "block_seconds": [1.0] * len(block_memory),
            "local_iterations": 1,
            "payload_bits": 8.0,
            "bandwidth_hz": 10.0,
            "devices": [
                {
                    "id": f"d{k}",
                    "memory_bytes": m,
                    "compute_factor": 1.0,
                    "spectral_efficiency": 1.0,
                }
                for k, m in enumerate(devices_memory)
            ],
        }
    )


@pytest.mark.parametrize(
    ("devices_memory", "block_memory", "message"),
    [
        ([9, 9], [1, 1, 1], "3 blocks need 3 distinct devices, but only 2 reported"),
        (
            [1, 1, 1],
            [1, 1, 2],
            "block 3 fits on no device: block 3 alone needs 2 B (largest available memory: 1 B)",
        ),
        (
            [3, 1, 1],
            [1, 2, 2],
            "blocks 2..3 need 2 distinct devices with at least 2 B each, "
            "but only 1 have that much memory",
        ),
        ([2, 1, 1], [2, 1, 2], "memory admits at most 2 of 3 blocks at once"),
    ],
)
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_infeasible_instances_say_why(
    devices_memory: list[float], block_memory: list[float], message: str, policy: str
) -> None:
    with pytest.raises(InfeasibleError, match=re.escape(message)):
        solve(tiny(devices_memory, block_memory), policy)


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(InstanceError, match=r"^policy: unknown policy 'fastest'"):
        solve(tiny([1, 1], [1, 1]), "fastest")


def test_crunch_refuses_costs_that_fall_with_depth_and_ba_solves_them() -> None:
    doc = json.loads(EXAMPLE.read_text())
    doc["devices"][3]["block_seconds"] = list(reversed(doc["block_seconds"]))
    del doc["devices"][3]["compute_factor"]
    instance = parse_instance(doc)
    with pytest.raises(InstanceError, match="device 'device-03' computes block 2 faster"):
        solve(instance, "crunch")
    assert_valid(instance, "ba")


def test_random_policy_is_reproducible_by_seed() -> None:
    instance = parse_instance(json.loads(EXAMPLE.read_text()))
    first = solve(instance, "random", seed=11).devices
    assert np.array_equal(first, solve(instance, "random", seed=11).devices)
    others = [solve(instance, "random", seed=s).devices for s in range(12, 20)]
    assert any(not np.array_equal(first, other) for other in others)


@pytest.mark.parametrize(
    ("devices", "bandwidth", "problem"),
    [
        ([0, 0], None, "more than one block"),
        ([0, 5], None, "out of range"),
        ([0], None, "expected 2 blocks"),
        ([0, 2], None, "does not fit"),
        ([0, 1], [6.0, 6.0], "exceeds the budget"),
        ([0, 1], [10.0, 0.0], "must be positive"),
    ],
)
def test_invalid_allocations_are_caught(
    devices: list[int], bandwidth: list[float] | None, problem: str
) -> None:
    instance = tiny([2, 2, 1], [1, 2])
    with pytest.raises(InvalidAllocationError, match=problem):
        make_allocation(instance, "test", devices, bandwidth)


def test_block_lists_are_compact() -> None:
    from lola_deft.scheduler.feasibility import format_blocks

    assert format_blocks(np.array([2])) == "block 3"
    assert format_blocks(np.array([0, 2, 3, 4, 7])) == "blocks 1, 3..5, 8"


@pytest.mark.parametrize("num_devices", [1, 3])
def test_policies_leave_the_instance_unchanged(num_devices: int) -> None:
    # A single block or device makes transposes contiguous views: solvers must not write them.
    instance = tiny([1.0] * num_devices, [1.0])
    before = instance.equal_bandwidth_latency.copy()
    for policy in POLICIES:
        solve(instance, policy)
    assert np.array_equal(instance.equal_bandwidth_latency, before)
    assert solve(instance, "ba").latency_s == pytest.approx(1.0 + 8.0 / 10.0)


def test_the_papers_baselines_as_defined_hit_the_memory_wall() -> None:
    """The two best channels (and the two fastest devices) have the least memory: the paper's
    memory-blind schemes give them the blocks anyway; the memory-safe ones skip to one that fits."""
    devices = [(2.0, 8.0, 1.0), (2.0, 4.0, 0.9), (9.0, 1.0, 0.5)]  # memory, r_k, compute factor
    doc = {
        "blocks": 2,
        "block_memory_bytes": [1.0, 5.0],
        "block_seconds": [1.0, 2.0],
        "local_iterations": 1,
        "payload_bits": 8.0,
        "bandwidth_hz": 10.0,
        "devices": [
            {"id": f"d{k}", "memory_bytes": m, "spectral_efficiency": r, "compute_factor": c}
            for k, (m, r, c) in enumerate(devices)
        ],
    }
    instance = parse_instance(doc)
    for scheme in ("comm-aware", "comp-aware"):
        with pytest.raises(
            InfeasibleError,
            match=rf"{scheme}-paper hit the memory wall: "
            r"device d\d \(2 B\) was given block 2, which needs 5 B",
        ):
            solve(instance, f"{scheme}-paper")
        safe = solve(instance, scheme)
        assert instance.device_ids[int(safe.devices[1])] == "d2"  # the one that holds block 2
    roomy = parse_instance({**doc, "block_memory_bytes": [1.0, 2.0]})
    paper = solve(roomy, "comm-aware-paper")
    assert [roomy.device_ids[int(d)] for d in paper.devices] == ["d1", "d0"]  # deepest to best

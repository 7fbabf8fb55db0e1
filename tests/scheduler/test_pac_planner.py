"""PAC+'s planners against brute force: the pipeline's stages and the data-parallel shares."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lola_deft.scheduler.errors import InfeasibleError, InstanceError
from lola_deft.scheduler.pac_planner import (
    PipelineDevice,
    PipelineInstance,
    owner_seconds,
    plan_pipeline,
    plan_shares,
    stage_fits,
    stage_seconds,
)


def brute_pipeline(instance: PipelineInstance) -> float:
    units, best = len(instance.unit_seconds), math.inf
    owner = instance.owner_device
    for last in range(units):
        if not stage_fits(instance, owner, 0, last):
            continue
        head = owner_seconds(instance, last)
        if last == units - 1:
            best = min(best, head)
            continue
        rest = units - last - 1
        for count in range(1, min(len(instance.helpers), rest) + 1):
            for order in itertools.permutations(instance.helpers, count):
                for cuts in itertools.combinations(range(last + 2, units), count - 1):
                    bounds = [last + 1, *cuts, units]
                    stages = list(zip(order, bounds, bounds[1:], strict=False))
                    if all(stage_fits(instance, d, a, b - 1) for d, a, b in stages):
                        slowest = max(stage_seconds(instance, d, a, b - 1) for d, a, b in stages)
                        best = min(best, max(head, slowest))
    return best


devices = st.lists(
    st.builds(
        PipelineDevice,
        device_id=st.uuids().map(str),
        memory_bytes=st.integers(1, 12).map(float),
        compute_factor=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
        uplink_bps=st.sampled_from([1.0, 4.0, 16.0]),
    ),
    min_size=1,
    max_size=4,
)


@given(
    seconds=st.lists(st.integers(0, 5).map(float), min_size=1, max_size=6),
    weights=st.lists(st.integers(0, 4).map(float), min_size=6, max_size=6),
    activation=st.sampled_from([0.0, 1.0, 4.0]),
    working=st.sampled_from([0.0, 1.0]),
    fleet=devices,
)
def test_the_pipeline_plan_is_the_brute_force_optimum(
    seconds: list[float],
    weights: list[float],
    activation: float,
    working: float,
    fleet: list[PipelineDevice],
) -> None:
    instance = PipelineInstance(
        tuple(seconds),
        tuple(weights[: len(seconds)]),
        activation,
        working,
        tuple(fleet),
        fleet[0].device_id,
    )
    best = brute_pipeline(instance)
    if math.isinf(best):
        with pytest.raises(InfeasibleError, match="cannot hold the backbone"):
            plan_pipeline(instance)
        return
    plan = plan_pipeline(instance)
    assert plan.bottleneck_s == pytest.approx(best)
    # The owner first; the stages are contiguous, cover every unit once, fit, and use each
    # device at most once.
    assert plan.stages[0].device_id == fleet[0].device_id
    assert plan.stages[0].first_unit == 0 and plan.stages[-1].last_unit == len(seconds) - 1
    for before, after in itertools.pairwise(plan.stages):
        assert after.first_unit == before.last_unit + 1
    assert len({stage.device_id for stage in plan.stages}) == len(plan.stages)
    by_id = {device.device_id: device for device in fleet}
    assert all(
        stage_fits(instance, by_id[s.device_id], s.first_unit, s.last_unit) for s in plan.stages
    )


def test_an_owner_that_holds_everything_runs_alone_when_links_are_slow() -> None:
    owner = PipelineDevice("phone", 100.0, 2.0, 1.0)
    helpers = [PipelineDevice(f"edge{i}", 100.0, 1.0, 1.0) for i in range(3)]
    instance = PipelineInstance((1.0,) * 4, (2.0,) * 4, 100.0, 0.0, (owner, *helpers), "phone")
    assert [s.device_id for s in plan_pipeline(instance).stages] == ["phone"]


def test_an_owner_too_small_for_the_backbone_gets_helpers() -> None:
    owner = PipelineDevice("phone", 3.0, 2.0, 1e9)
    helpers = [PipelineDevice(f"edge{i}", 5.0, 1.0, 1e9) for i in range(3)]
    instance = PipelineInstance((1.0,) * 4, (2.0,) * 4, 1.0, 0.0, (owner, *helpers), "phone")
    plan = plan_pipeline(instance)
    assert plan.stages[0].device_id == "phone" and plan.stages[0].last_unit == 0
    # Its memory takes the embeddings alone (2 of 3 bytes): helpers run the rest, and the
    # phone's own compute (1 s x factor 2) is the bottleneck.
    assert len(plan.stages) >= 2 and plan.bottleneck_s == pytest.approx(2.0)


def brute_shares(t: list[float], u: list[float], caps: list[int], total: int) -> float:
    best = math.inf
    for shares in itertools.product(*(range(c + 1) for c in caps)):
        if sum(shares) == total:
            best = min(best, max((u[k] + n * t[k] for k, n in enumerate(shares) if n), default=0.0))
    return best


@given(
    data=st.lists(
        st.tuples(st.integers(1, 6).map(float), st.integers(0, 6).map(float), st.integers(0, 5)),
        min_size=1,
        max_size=3,
    ),
    total=st.integers(0, 8),
)
def test_the_shares_are_the_brute_force_optimum(
    data: list[tuple[float, float, int]], total: int
) -> None:
    t, u, caps = (list(column) for column in zip(*data, strict=True))
    if sum(caps) < total:
        with pytest.raises(InfeasibleError, match="the round needs"):
            plan_shares(t, u, caps, total)
        return
    plan = plan_shares(t, u, caps, total)
    assert sum(plan.shares) == total and all(n <= c for n, c in zip(plan.shares, caps, strict=True))
    assert plan.makespan_s == pytest.approx(brute_shares(t, u, caps, total))


def test_faster_devices_take_more_samples() -> None:
    plan = plan_shares([1.0, 2.0, 4.0], [0.0, 0.0, 0.0], [100, 100, 100], 70)
    assert plan.shares == (40, 20, 10) and plan.makespan_s == 40.0


def test_bad_shares_input_is_named() -> None:
    with pytest.raises(InstanceError, match="seconds_per_sample"):
        plan_shares([float("nan")], [0.0], [1], 1)
    with pytest.raises(InstanceError, match="compute_factor"):
        PipelineInstance((1.0,), (1.0,), 1.0, 0.0, (PipelineDevice("a", 1.0, 0.0, 1.0),), "a")

"""ba, crunch and jbba against brute force; jbba never worse than ba or dual-ascent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from lola_deft.scheduler import InfeasibleError, Instance, solve
from tests.scheduler.strategies import (
    brute_force_equal_bandwidth,
    brute_force_joint,
    instances,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_ba_optimal(instance: Instance, policy: str = "ba") -> None:
    """`policy` (an exact P1 solver) finds brute force's optimum, or says it is infeasible."""
    expected = brute_force_equal_bandwidth(instance)
    if not np.isfinite(expected):
        with pytest.raises(InfeasibleError):
            solve(instance, policy)
        return
    assert solve(instance, policy).latency_s == pytest.approx(expected, rel=1e-12)


@SETTINGS
@given(instances(monotone=True))
def test_ba_matches_brute_force_on_depth_monotone_instances(instance: Instance) -> None:
    assert_ba_optimal(instance)  # the O(KL) nested-neighbourhood path


@SETTINGS
@given(instances(monotone=False))
def test_ba_matches_brute_force_on_arbitrary_instances(instance: Instance) -> None:
    assert_ba_optimal(instance)  # mostly the threshold-search + matching path


@SETTINGS
@given(instances(monotone=False))
def test_the_papers_linear_search_reference_matches_brute_force(instance: Instance) -> None:
    assert_ba_optimal(instance, "linear-hungarian")


@SETTINGS
@given(instances(monotone=True))
def test_crunch_finds_the_equal_bandwidth_optimum(instance: Instance) -> None:
    expected = brute_force_equal_bandwidth(instance)
    assume(np.isfinite(expected))
    assert solve(instance, "crunch").latency_s == pytest.approx(expected, rel=1e-12)


@SETTINGS
@given(instances(monotone=False))
def test_jbba_matches_brute_force(instance: Instance) -> None:
    expected = brute_force_joint(instance)
    if not np.isfinite(expected):
        with pytest.raises(InfeasibleError):
            solve(instance, "jbba")
        return
    allocation = solve(instance, "jbba")
    assert allocation.latency_s == pytest.approx(expected, rel=1e-8)
    assert allocation.bandwidth_hz.sum() <= instance.bandwidth_hz * (1 + 1e-9)


@SETTINGS
@given(instances(monotone=True, max_devices=8))
def test_jbba_is_never_above_ba_or_dual_ascent(instance: Instance) -> None:
    try:
        joint = solve(instance, "jbba").latency_s
    except InfeasibleError:
        return
    tolerance = 1 + 1e-9
    assert joint <= solve(instance, "ba").latency_s * tolerance
    assert joint <= solve(instance, "dual-ascent").latency_s * tolerance


@SETTINGS
@given(instances(monotone=True))
def test_jbba_finishes_every_chosen_device_together(instance: Instance) -> None:
    try:
        allocation = solve(instance, "jbba")
    except InfeasibleError:
        return
    assert np.allclose(allocation.device_latency_s, allocation.latency_s, rtol=1e-9)
    # The whole band is used, up to the rounding of T - J (a few ulps of T) relative to the
    # shortest upload: that limits how precisely a device's bandwidth follows from T.
    rounding = 64 * np.finfo(float).eps * allocation.latency_s / allocation.upload_s.min()
    total = allocation.bandwidth_hz.sum()
    assert instance.bandwidth_hz * (1 - 1e-9 - rounding) <= total <= instance.bandwidth_hz

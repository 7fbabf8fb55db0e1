"""Block-cost claims held to the device's own history and to its hardware class."""

from __future__ import annotations

from lola_deft.server.claims import ClaimChecker
from lola_deft.server.messages import ResourceReport


def claim(device_id: str, *seconds: float) -> ResourceReport:
    return ResourceReport(device_id, 1, 8e9, 1.0, 10.0, 2.0, 0.0, seconds, (1e6,) * len(seconds))


def classes(**members: str) -> ClaimChecker:
    return ClaimChecker(lambda device_id: members.get(device_id, device_id))


def test_a_claim_far_faster_than_its_own_history_is_raised_and_named() -> None:
    checker = classes()
    checker.plausible([claim("a", 0.1, 0.2)])
    (checked,), (clamp,) = checker.plausible([claim("a", 1e-4, 0.2)])
    assert checked.block_seconds == (0.1 / 10, 0.2)
    assert (clamp.device, clamp.block, clamp.claimed, clamp.used) == ("a", 1, 1e-4, 0.1 / 10)
    assert "own recent reports" in clamp.evidence


def test_slower_claims_and_moderate_speed_ups_are_taken_as_they_are() -> None:
    for honest in (claim("a", 5.0, 9.0), claim("a", 0.05, 0.1)):
        checker = classes()
        checker.plausible([claim("a", 0.1, 0.2)])
        (checked,), clamps = checker.plausible([honest])
        assert checked == honest and clamps == []


def test_the_hardware_class_is_evidence_once_it_has_three_members() -> None:
    pair = classes(a="phone", liar="phone")
    (_, checked), clamps = pair.plausible([claim("a", 0.1), claim("liar", 1e-6)])
    assert checked.block_seconds == (1e-6,) and clamps == []  # two members prove nothing
    fleet = classes(a="phone", b="phone", liar="phone", board="jetson")
    reports = [claim("a", 0.1), claim("b", 0.12), claim("liar", 1e-6), claim("board", 1e-3)]
    checked_reports, clamps = fleet.plausible(reports)
    assert [c.device for c in clamps] == ["liar"]
    assert checked_reports[2].block_seconds == (0.1 / 10,)
    assert checked_reports[3] == reports[3]  # another class: not compared with phones


def test_forgotten_devices_leave_no_history() -> None:
    checker = classes()
    checker.plausible([claim("a", 0.1), claim("b", 0.1)])
    checker.retain(lambda device_id: device_id == "b")
    (checked,), clamps = checker.plausible([claim("a", 1e-4)])  # "a" starts afresh
    assert checked.block_seconds == (1e-4,) and clamps == []

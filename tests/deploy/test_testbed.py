"""The emulated wireless testbed: namespaces, shaped uplinks, a real round trip, full cleanup.

Runs only as root with iproute2 and permission to create network namespaces (CI has all three);
otherwise every test here is skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from lola_deft.server.testbed.netns import (
    Testbed,
    TestbedUnavailable,
    check_available,
    leftovers,
    shape,
)
from lola_deft.server.testbed.netns import shaped_rate as tc_show
from lola_deft.server.testbed.runner import TestbedConfig, run_testbed
from tests.helpers import run_deft


def unavailable_reason() -> str | None:
    try:
        check_available()
    except TestbedUnavailable as error:
        return str(error)
    return None


REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"testbed unavailable: {REASON}")


def test_up_shape_down() -> None:
    testbed = Testbed("dtsu", agents=2)
    try:
        result = run_deft("testbed", "up", "--prefix", "dtsu", "--agents", "2")
        assert result.returncode == 0, result.stderr
        assert "ip netns exec dtsu-a1 deft agent --coordinator 10.77.0.1:50052" in result.stdout
        assert {"dtsu-a0", "dtsu-a1", "dtsubr"} <= set(leftovers(testbed))
        shape(testbed, 1, 1_500_000)
        assert "tbf" in tc_show(testbed, 1) and "rate 1500Kbit" in tc_show(testbed, 1)
    finally:
        result = run_deft("testbed", "down", "--prefix", "dtsu")
    assert result.returncode == 0
    assert leftovers(testbed) == []


def test_a_short_run_through_shaped_links_cleans_up() -> None:
    config = TestbedConfig(agents=3, rounds=2, prefix="dtsr", timeout_s=300)
    result = run_testbed(config, log=lambda message: None)
    rows = result["rows"]
    assert {(row["round"], row["device"]) for row in rows} == {
        (r, f"a{i}") for r in (1, 2) for i in range(3)
    }
    for row in rows:
        assert row["modelled_upload_s"] > 0 and row["measured_upload_s"] > 0
        assert row["bandwidth_hz"] > 0
    assert leftovers(Testbed("dtsr", 3)) == []


def test_everything_is_removed_after_a_failure(tmp_path: Path) -> None:
    config = TestbedConfig(
        agents=2, rounds=1, prefix="dtsf", model_dir=tmp_path / "no-model", timeout_s=60
    )
    with pytest.raises(RuntimeError, match="coordinator exited"):
        run_testbed(config, log=lambda message: None)
    assert leftovers(Testbed("dtsf", 2)) == []


def test_a_stopped_testbed_run_stops_its_processes_and_removes_the_testbed() -> None:
    import signal

    import psutil

    from tests.helpers import start_deft

    run, _ = start_deft(
        "testbed",
        "run",
        "--agents",
        "3",
        "--rounds",
        "500",
        "--prefix",
        "dtss",
        ready=r"training 500 rounds",
        timeout=180,
    )
    children = psutil.Process(run.pid).children(recursive=True)
    assert len(children) >= 5  # the scheduler, the coordinator, three agents
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 130
    still = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert still == [], [c.cmdline()[-6:] for c in still]
    assert leftovers(Testbed("dtss", 3)) == []

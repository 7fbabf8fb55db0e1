"""The load benchmark's machinery on a small fleet: real coordinator and scheduler processes,
fake agents speaking the real protocol, a probe device, and the figures it reports."""

from __future__ import annotations

from lola_deft.server.load_bench import bench_load, format_load, load_targets


def test_a_small_fleet_is_served_completely() -> None:
    result = bench_load(agents=20, seconds=4)
    assert result["errors"] == {}
    assert result["failed_heartbeats"] == 0
    assert result["rounds"] >= 2
    assert result["reports_per_round_min"] == 20 and result["rounds_missing_reports"] == 0
    assert result["calls"]["Register"] == 20
    assert result["calls"]["UploadGradient"] >= result["rounds"] - 1
    assert result["probe_heartbeats"] > 0
    assert "20 fake agents" in format_load(result)
    assert len(load_targets(result)) == 4

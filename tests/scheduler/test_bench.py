"""The benchmark runs end to end (quick mode) and writes its tables, JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lola_deft.scheduler import bench


def test_quick_bench_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "(a) median solve time per policy" in printed
    assert "vs transmit SNR (dB)" in printed
    results = json.loads((tmp_path / "scheduler.json").read_text())
    assert {row["devices"] for row in results["solve_times"]} == {20, 100}
    for sweep in results["sweeps"].values():
        assert sweep["jbba_above_ba_or_dual_ascent"] == 0
        means = sweep["mean_latency_s"]
        assert all(j <= b * (1 + 1e-9) for j, b in zip(means["jbba"], means["ba"], strict=True))
    for name in bench.FIGURES.values():
        assert (tmp_path / name).stat().st_size > 1000

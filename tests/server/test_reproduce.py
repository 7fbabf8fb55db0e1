"""`deft reproduce`: every figure, Table I and the side-by-side report from real runs (tiny
encoder, two rounds per scheme), and the report's arithmetic on known histories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lola_deft.server.plots import read_run
from lola_deft.server.reproduce import (
    SCHEMES,
    ReproduceConfig,
    reproduce,
    time_to_reach,
    upload_share,
)
from tests.helpers import run_deft
from tests.server.test_plots import write_run


def test_time_to_reach_counts_the_latency_up_to_the_first_good_evaluation(tmp_path: Path) -> None:
    # Evaluations after rounds 2 and 4: 0.7 and 0.9 (write_run); latencies 2, 3, 4, 5.
    run = read_run(write_run(tmp_path / "a", "jbba", [2.0, 3.0, 4.0, 5.0]))
    assert time_to_reach(run, 0.65) == {"round": 2, "modelled_s": 5.0, "measured_s": 2.5}
    assert time_to_reach(run, 0.85) == {"round": 4, "modelled_s": 14.0, "measured_s": 7.0}
    assert time_to_reach(run, 0.95) is None
    # Each round's only device spends latency - 0.1 s uploading.
    assert upload_share(run) == pytest.approx((2.9 / 3 + 3.9 / 4) / 2)  # the median of four


def test_a_small_reproduction_writes_every_figure_and_the_report(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reproduce"
    results = reproduce(
        ReproduceConfig(out, model_dir=tiny_model_dir, rounds=2, sweep_rounds=2, agents=3)
    )
    for stem in (
        "fig4_block_costs",
        "fig5_latency_vs_snr",
        "fig6_latency_vs_bandwidth",
        "fig8_latency_vs_devices",
        "fig7_sst2",
    ):
        assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG"), stem
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF"), stem
    [task] = results["tasks"]
    assert set(task["schemes"]) == {*SCHEMES, "pac"}
    assert task["threshold"] == pytest.approx(0.9 * task["centralized_metric"])
    for scheme in SCHEMES:  # each scheme really trained with its own policy
        [path] = (out / "runs" / f"sst2-{scheme}").glob("runs/*/history.json")
        history = json.loads(path.read_text())
        assert [r["policy"] for r in history["rounds"]] == [scheme, scheme]
    report = (out / "REPRODUCTION.md").read_text()
    assert "| Fig. 5: BA / comm-aware round latency at 10 dB | ~0.6 |" in report
    assert "| Table I (sst2-mini (synthetic)): JBBA for DEFT / comm-aware time to 90% | 0.62 |" in (
        report
    )
    assert "**synthetic**" in report
    for name in ("Comm-aware DEFT", "BA for DEFT", "JBBA for DEFT"):
        assert f"| {name} | " in report
    # PAC+'s row: its own run, 6x the rounds, no paper number.
    [path] = (out / "runs" / "sst2-pac").glob("runs/*/history.json")
    assert len(json.loads(path.read_text())["rounds"]) == 12
    assert "| PAC+ (ours: parallel adapters, JBBA slots, 12 rounds) | n/a | " in report
    assert json.loads((out / "results.json").read_text())["sweep_rounds"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--glue", "wnli=/tmp"], "unknown GLUE task 'wnli'"),
        (["--glue", "cola"], "expected TASK=DIR"),
        (["--glue", "cola=/nonexistent/CoLA"], "no such file"),
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
    ],
)
def test_bad_inputs_fail_before_any_work(flags: list[str], message: str, tmp_path: Path) -> None:
    finished = run_deft("reproduce", "--out", str(tmp_path / "out"), *flags)
    assert finished.returncode == 2
    assert message in finished.stderr and "Traceback" not in finished.stderr
    assert not (tmp_path / "out").exists()

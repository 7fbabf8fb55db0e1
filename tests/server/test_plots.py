"""`deft plot` and the demo's figures: metric against rounds and cumulative latency, titled from
the run's provenance, with the centralized reference, as PNG and PDF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lola_deft.cli.main import main
from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.server.messages import AssignmentRecord, Evaluation, RoundRecord, RunHistory
from lola_deft.server.plots import describe, figure, read_run


def write_run(folder: Path, policy: str, latencies: list[float]) -> Path:
    rounds = [
        RoundRecord(
            round=number,
            policy=policy,
            modelled_latency_s=latency,
            measured_wall_s=latency / 2,
            solve_seconds=0.01,
            reported_devices=2,
            assignment=[AssignmentRecord(1, "d0", 1e6, latency, 0.1, latency - 0.1)],
            blocks_updated=[1],
            train_loss=0.5,
            eval=Evaluation("accuracy", 0.5 + 0.1 * number, 0.6) if number % 2 == 0 else None,
        )
        for number, latency in enumerate(latencies, start=1)
    ]
    history = RunHistory(Evaluation("accuracy", 0.5, 0.7), rounds).to_dict()
    provenance = {
        "seed": 3,
        "model": {"name": "org/encoder", "fingerprint": "bert-L2"},
        "config": {"task": "sst2", "policy": policy, "data_dir": str(EMBEDDED_TASK_DIR)},
    }
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps({**history, "provenance": provenance}))
    return folder


def test_metric_is_placed_at_cumulative_latency(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "a", "jbba", [2.0, 3.0, 4.0, 5.0]))
    assert run.points("round") == ([0.0, 2.0, 4.0], [0.5, 0.7, 0.9])
    assert run.points("modelled") == ([0.0, 5.0, 14.0], [0.5, 0.7, 0.9])
    assert run.points("measured") == ([0.0, 2.5, 7.0], [0.5, 0.7, 0.9])
    title, caption = describe(run)
    assert title == "LoLa-DEFT: org/encoder on sst2 (policy jbba, seed 3)"
    assert "synthetic sst2-mini" in caption


def test_deft_plot_writes_png_and_pdf_of_several_runs_with_a_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_run(tmp_path / "a", "jbba", [2.0, 3.0])
    second = write_run(tmp_path / "b", "random", [4.0, 6.0])
    reference = tmp_path / "central.json"
    steps = [{"step": s, "eval": {"metric": 0.5 + 0.2 * s}} for s in range(3)]
    reference.write_text(json.dumps({"provenance": {}, "steps": steps}))
    stem = tmp_path / "figures" / "compare"
    assert main(["plot", str(first), str(second / "history.json"), "--reference",
                 str(reference), "--out", str(stem)]) == 0  # fmt: skip
    assert capsys.readouterr().out.split() == [f"{stem}.png", f"{stem}.pdf"]
    assert Path(f"{stem}.png").read_bytes().startswith(b"\x89PNG")
    assert Path(f"{stem}.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read: No such file or directory"),
        ("{nope", "not a history.json"),
        ('{"baseline": null, "rounds": []}', "no rounds recorded"),
    ],
)
def test_a_file_that_cannot_be_plotted_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "history.json"
    if content is not None:
        path.write_text(content)
    assert main(["plot", str(path), "--out", str(tmp_path / "x")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("deft plot: error: ") and message in line
    assert not (tmp_path / "x.png").exists()


def test_the_figure_has_integer_round_ticks_time_axes_and_the_reference(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "a", "jbba", [2.0, 3.0, 4.0]))  # few rounds
    drawn = figure([run], [(0, 0.5), (5, 0.9)])
    by_round, by_modelled, by_measured, latency = drawn.axes
    for axis in (by_round, latency):
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert by_modelled.get_xlabel() == "cumulative modelled round latency (s)"
    assert by_measured.get_xlabel() == "cumulative measured round time (s)"
    labels = [line.get_label() for line in by_modelled.get_lines()]
    assert "centralized, final" in labels and "90% of centralized" in labels
    assert drawn.get_suptitle() == "LoLa-DEFT: org/encoder on sst2 (policy jbba, seed 3)"

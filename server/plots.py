"""Figures of runs a researcher can put in a paper: the dev metric against rounds and against
cumulative round latency (the paper's claim is accuracy against time), modelled and measured,
with the centralized baseline as reference, a title and caption naming model, task, policy and
seed, and PNG plus PDF. Reads only history.json documents (and `deft centralized --out`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.server.messages import RunHistory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "pdf")


class PlotError(ValueError):
    """A file to plot is missing, unreadable or holds no rounds."""


@dataclass(frozen=True)
class RunCurve:
    """One run: its history and what it was run with (history.json's provenance)."""

    label: str
    history: RunHistory
    provenance: dict[str, Any]

    def points(self, x: str) -> tuple[list[float], list[float]]:
        """(x, metric) at the baseline and every evaluated round; x is "round", "modelled" or
        "measured" (cumulative seconds of round latency)."""
        baseline = self.history.baseline
        xs = [0.0] if baseline else []
        ys = [baseline.metric] if baseline else []
        total = 0.0
        for record in self.history.rounds:
            total += record.modelled_latency_s if x == "modelled" else record.measured_wall_s
            if record.eval is not None:
                xs.append(float(record.round) if x == "round" else total)
                ys.append(record.eval.metric)
        return xs, ys


def read_run(path: Path) -> RunCurve:
    """A run folder (with history.json) or a history.json file."""
    file = path / "history.json" if path.is_dir() else path
    try:
        document = json.loads(file.read_text())
        history = RunHistory.from_dict(document)
    except OSError as error:
        raise PlotError(f"{file}: cannot read: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise PlotError(f"{file}: not a history.json: {error}") from None
    if history.baseline is None or not history.rounds:
        raise PlotError(f"{file}: no rounds recorded")
    provenance = document.get("provenance") or {}
    policy = (provenance.get("config") or {}).get("policy") or history.rounds[0].policy
    name = path.name if path.is_dir() else path.parent.name
    return RunCurve(f"{policy} ({name})", history, provenance)


def read_reference(path: Path) -> list[tuple[int, float]]:
    """(step, metric) of a `deft centralized --out` file."""
    try:
        document = json.loads(path.read_text())
        steps = document["steps"] if isinstance(document, dict) else document
        return [(int(s["step"]), float(s["eval"]["metric"])) for s in steps if "eval" in s]
    except OSError as error:
        raise PlotError(f"{path}: cannot read: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise PlotError(f"{path}: not a `deft centralized --out` file: {error}") from None


def describe(run: RunCurve) -> tuple[str, str]:
    """Title and caption from a run's provenance."""
    provenance = run.provenance
    config = provenance.get("config") or {}
    model = (provenance.get("model") or {}).get("name", "model")
    task = config.get("task", "task")
    policy = config.get("policy", run.history.rounds[0].policy)
    seed = provenance.get("seed", config.get("seed", "?"))
    title = f"LoLa-DEFT: {model} on {task} (policy {policy}, seed {seed})"
    synthetic = config.get("data_dir") == str(EMBEDDED_TASK_DIR)
    caption = (
        f"Dev {run.history.baseline.metric_name if run.history.baseline else 'metric'} against "
        "rounds and against cumulative round latency: modelled = the paper's wireless latency "
        "model for the scheduled blocks and bandwidth; measured = wall time on this machine. "
        f"lr {config.get('learning_rate', '?')}, batch {config.get('batch_size', '?')}, "
        f"M = {config.get('local_iterations', '?')}, LoRA rank "
        f"{(config.get('lora') or {}).get('rank', '?')}."
        + (" Data: synthetic sst2-mini (template sentences), not SST-2." if synthetic else "")
    )
    return title, caption


def plot_runs(
    runs: list[RunCurve], stem: Path, reference: list[tuple[int, float]] | None = None
) -> list[Path]:
    """Write stem.png and stem.pdf of figure(); returns the files written."""
    import matplotlib.pyplot as plt

    drawn = figure(runs, reference)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for extension in FORMATS:
        path = stem.parent / f"{stem.name}.{extension}"
        drawn.savefig(path, dpi=120)
        written.append(path)
    plt.close(drawn)
    return written


def figure(runs: list[RunCurve], reference: list[tuple[int, float]] | None = None) -> Figure:
    """Metric against rounds, cumulative modelled latency and cumulative measured time, and
    the per-round latencies, titled and captioned from the first run's provenance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    canvas, axes = plt.subplots(2, 2, figsize=(11, 8))
    by_round, by_modelled, by_measured, latency = axes.flat
    metric_name = runs[0].history.baseline.metric_name if runs[0].history.baseline else "metric"
    for run in runs:
        for axis, x in ((by_round, "round"), (by_modelled, "modelled"), (by_measured, "measured")):
            axis.plot(*run.points(x), marker="o", markersize=3, label=run.label)
        numbers = [r.round for r in run.history.rounds]
        latency.plot(
            numbers,
            [r.modelled_latency_s for r in run.history.rounds],
            marker="s",
            markersize=3,
            label=f"{run.label}: modelled",
        )
        latency.plot(
            numbers,
            [r.measured_wall_s for r in run.history.rounds],
            marker="^",
            markersize=3,
            linestyle="--",
            label=f"{run.label}: measured",
        )
    if reference:
        steps, values = zip(*reference, strict=True)
        by_round.plot(steps, values, color="black", linestyle=":", label="centralized LoRA")
        final = values[-1]
        for axis in (by_modelled, by_measured):
            axis.axhline(final, color="black", linestyle=":", label="centralized, final")
            axis.axhline(0.9 * final, color="grey", linestyle="-.", label="90% of centralized")
    by_round.set_xlabel("round")
    by_modelled.set_xlabel("cumulative modelled round latency (s)")
    by_measured.set_xlabel("cumulative measured round time (s)")
    latency.set_xlabel("round")
    latency.set_ylabel("round latency (s)")
    for axis in (by_round, by_modelled, by_measured):
        axis.set_ylabel(f"dev {metric_name}")
    for axis in (by_round, latency):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes.flat:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best", framealpha=0.8)
    title, caption = describe(runs[0])
    if len(runs) > 1:
        title = title.split(" (policy")[0] + f" ({len(runs)} runs)"
    canvas.suptitle(title, fontsize=12)
    canvas.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    canvas.tight_layout(rect=(0, 0.07, 1, 0.96))
    return canvas

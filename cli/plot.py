"""`deft plot`: runs side by side (metric against rounds and against cumulative latency), with
the centralized baseline as reference, as PNG and PDF."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lola_deft.cli.common import user_errors


def add_plot_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="plot runs: metric against rounds and cumulative latency (PNG + PDF)",
        description="Plots one or more runs (run folders or history.json files) in one "
        "figure: the dev metric against rounds, against cumulative modelled latency and "
        "against cumulative measured time, and each round's latency.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or history.json files")
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a `deft centralized --out` file, drawn as the centralized reference (default: none)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("deft-plot"),
        help="output path without extension: OUT.png and OUT.pdf are written",
    )
    parser.set_defaults(handler=run_plot)


def _plot_errors() -> tuple[type[Exception], ...]:
    from lola_deft.server.plots import PlotError

    return (PlotError, OSError)


@user_errors("plot", _plot_errors)
def run_plot(args: argparse.Namespace) -> int:
    from lola_deft.server.plots import plot_runs, read_reference, read_run

    runs = [read_run(path) for path in args.runs]
    reference = read_reference(args.reference) if args.reference else None
    for path in plot_runs(runs, args.out, reference):
        print(path)
    return 0

"""`deft demo`: the whole system on one machine (the demo itself is lola_deft.server.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lola_deft.cli.common import (
    add_model_arguments,
    policy_name,
    positive_float,
    positive_int,
    task_name,
    user_errors,
)

DEMO_DESCRIPTION = """Starts the scheduler, the coordinator and N agents as separate processes
on loopback, with heterogeneous memory caps, channels and slowdowns, shows progress and the
per-round table, and ends with the metric before and after, the saved adapter, a metrics JSON
and a plot."""


def _no_expected_errors() -> tuple[type[Exception], ...]:
    return ()


def add_demo_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="scheduler + coordinator + N agents on this machine, end to end",
        description=DEMO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--agents",
        type=positive_int,
        default=6,
        help="device agents to start, at least one per LoRA block (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=20, help="training rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--policy",
        type=policy_name,
        default="jbba",
        help="scheduling policy (default: %(default)s)",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--task",
        type=task_name,
        default="sst2",
        help="GLUE task; the embedded data (synthetic sst2-mini) is SST-2 format, other tasks "
        "need --data DIR (default: %(default)s)",
    )
    parser.add_argument(
        "--local-iterations",
        type=positive_int,
        default=2,
        help="M: mini-batches each device trains per round (default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=5e-3,
        help="Adam learning rate (default: %(default)s; the coordinator's own default is "
        "5e-4, for longer runs)",
    )
    parser.add_argument(
        "--max-seq-length",
        type=positive_int,
        default=32,
        help="tokens per sentence, longer ones cut (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-every",
        type=positive_int,
        default=2,
        help="evaluate on the dev split every this many rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("deft-demo"),
        help="output folder: each demo is a run of its own in OUT/runs/<id>/ (checkpoints, "
        "history, metrics JSON, plot), logs in OUT/logs/<id>/; earlier runs are kept "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="coordinator's Prometheus port (default: %(default)s, a free one)",
    )
    parser.set_defaults(handler=run_demo)


@user_errors("demo", _no_expected_errors)
def run_demo(args: argparse.Namespace) -> int:
    from lola_deft.server.demo import run_demo as run

    return run(args)

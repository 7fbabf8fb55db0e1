"""`deft demo`: the whole system on one machine (the demo itself is lola_deft.server.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lola_deft.cli.common import (
    add_payload_arguments,
    add_policy_argument,
    add_training_arguments,
    port,
    positive_int,
    user_errors,
)
from lola_deft.cli.run_config import add_config_argument

DEMO_DESCRIPTION = """Starts the scheduler, the coordinator and N agents as separate processes
on loopback, with heterogeneous memory caps, channels and slowdowns, shows progress and the
per-round table, and ends with the metric before and after, the saved adapter, a metrics JSON
and plots (PNG and PDF)."""


def _no_expected_errors() -> tuple[type[Exception], ...]:
    return ()


def add_demo_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="scheduler + coordinator + N agents on this machine, end to end",
        description=DEMO_DESCRIPTION,
    )
    add_config_argument(parser, "demo")
    parser.add_argument(
        "--agents",
        type=positive_int,
        default=6,
        help="device agents to start, at least one per LoRA block (default: %(default)s)",
    )
    add_policy_argument(parser)
    add_payload_arguments(parser)
    add_training_arguments(parser)
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
        type=port,
        default=0,
        help="coordinator's Prometheus port (default: %(default)s, a free one)",
    )
    parser.set_defaults(handler=run_demo)


@user_errors("demo", _no_expected_errors)
def run_demo(args: argparse.Namespace) -> int:
    from lola_deft.server.demo import run_demo as run

    return run(args)

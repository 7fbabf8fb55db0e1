"""The `deft` command. Subcommands import their modules lazily, so an agent-only install
(no scipy) can still run `deft agent`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scheduler.cli import add_compare_command, add_schedule_command, add_scheduler_command
from server.demo import add_demo_command
from server.roles_cli import (
    add_agent_command,
    add_centralized_command,
    add_coordinator_command,
    add_health_command,
    add_testbed_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deft",
        description="LoLa-DEFT: low-latency device-edge cooperative LoRA fine-tuning.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_schedule_command(subparsers)
    add_compare_command(subparsers)
    add_scheduler_command(subparsers)
    add_coordinator_command(subparsers)
    add_agent_command(subparsers)
    add_demo_command(subparsers)
    add_centralized_command(subparsers)
    add_health_command(subparsers)
    add_testbed_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

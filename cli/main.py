"""The `deft` command. Role modules import their heavy code only when a command runs, so an
agent-only install (no scheduler, no coordinator, no scipy) still builds the parser and runs
`deft agent`; the scheduler's commands come from the scheduler package when it is installed."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from lola_deft import __version__
from lola_deft.cli import (
    agent,
    certs,
    config,
    coordinator,
    demo,
    health,
    plot,
    reproduce,
    testbed,
)
from lola_deft.cli.common import CommandParser
from lola_deft.cli.run_config import RunConfigError, config_commands, defaults_from


def _add_scheduler_commands(subparsers: Any) -> None:
    try:
        from lola_deft.scheduler.cli import (
            add_compare_command,
            add_schedule_command,
            add_scheduler_command,
        )
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("lola_deft."):
            raise
        for name in ("schedule", "compare", "scheduler"):
            parser = subparsers.add_parser(name, help="(not in this agent-only install)")
            parser.set_defaults(handler=_not_installed(name))
        return
    add_schedule_command(subparsers)
    add_compare_command(subparsers)
    add_scheduler_command(subparsers)


def _not_installed(name: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        print(
            f"deft {name}: error: not part of this install (the scheduler is missing; an "
            "agent-only install runs `deft agent` only)",
            file=sys.stderr,
        )
        return 2

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="deft",
        description="LoLa-DEFT: low-latency device-edge cooperative LoRA fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_scheduler_commands(subparsers)
    coordinator.add_coordinator_command(subparsers)
    agent.add_agent_command(subparsers)
    demo.add_demo_command(subparsers)
    coordinator.add_centralized_command(subparsers)
    health.add_health_command(subparsers)
    certs.add_certs_command(subparsers)
    testbed.add_testbed_command(subparsers)
    plot.add_plot_command(subparsers)
    reproduce.add_reproduce_command(subparsers)
    config.add_config_command(subparsers)
    return parser


def die_with_parent() -> None:
    """Started by the cluster launcher (DEFT_DIE_WITH_PARENT=its pid): have the kernel send
    SIGTERM when the launcher dies, whatever kills it (Linux; elsewhere nothing happens). If it
    died before this ran, stop now."""
    parent = os.environ.pop("DEFT_DIE_WITH_PARENT", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def parse(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse the command line; a --config run file supplies defaults that flags override (the
    file is read, and every value in it checked, before the command runs)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    command = getattr(args, "config_command", None)
    if path is not None and command is not None:
        commands = config_commands(parser)
        try:
            commands[command].set_defaults(**defaults_from(path, command, commands))
        except RunConfigError as error:
            parser.exit(2, f"deft {command}: error: {error}\n")
        args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()
    args = parse(argv)
    try:
        return int(args.handler(args))
    except BrokenPipeError:
        # The reader went away (`deft compare | head`): stop quietly, as Unix tools do; point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


if __name__ == "__main__":
    sys.exit(main())

"""`deft config show`: the settings a command would run with (built-in defaults, then the run
file, then flags), printed as a run file that reproduces them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lola_deft.cli.run_config import SHARED, config_commands, resolved


def add_config_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="show the settings a run would use")
    commands = parser.add_subparsers(dest="config_subcommand", required=True)
    show = commands.add_parser(
        "show",
        help="print the resolved settings as a run file",
        description="Prints the settings `deft COMMAND` would run with: the built-in "
        "defaults, then --config FILE, then any flags after --. The output is a run file: "
        "`deft config show > run.toml` and edit it.",
    )
    show.add_argument(
        "--for",
        dest="for_command",
        choices=sorted(config_commands(*subparsers.choices.values())),
        default="coordinator",
        help="the command whose settings to show",
    )
    show.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="RUN.toml",
        help="run file to resolve (default: none, the built-in defaults)",
    )
    show.add_argument(
        "flags",
        nargs=argparse.REMAINDER,
        help="flags of that command, after --, e.g. -- --lr 1e-3",
    )
    show.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    from lola_deft.cli.main import build_parser, parse
    from lola_deft.server.toml_text import dumps

    command = args.for_command
    argv = [*_command_words(command), *(["--config", str(args.config)] if args.config else [])]
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    parser = build_parser()
    commands = config_commands(parser)
    values = resolved(parse([*argv, *flags], parser), commands[command])
    shared = _shared_settings(commands)
    tables = {
        SHARED: {k: v for k, v in values.items() if k in shared},
        command: {k: v for k, v in values.items() if k not in shared},
    }
    source = f" + {args.config}" if args.config else ""
    print(f"# deft {' '.join(_command_words(command))}: built-in defaults{source} + flags")
    print(dumps({name: table for name, table in tables.items() if table}), end="")
    return 0


def _command_words(command: str) -> list[str]:
    return ["coordinator", "serve"] if command == "coordinator" else [command]


def _shared_settings(commands: dict[str, argparse.ArgumentParser]) -> set[str]:
    """Settings two or more commands have: they go in [run]."""
    seen: dict[str, int] = {}
    for parser in commands.values():
        for action in parser._actions:
            seen[action.dest] = seen.get(action.dest, 0) + 1
    return {dest for dest, count in seen.items() if count > 1}

"""Run files: `--config run.toml` gives a command its settings, flags given on the command line
override them, and `deft config show` prints what a command would run with.

    [run]            # every command that has the setting: coordinator, demo, centralized
    task = "sst2"
    lr = 5e-3
    lora_targets = ["query", "value"]

    [coordinator]    # one command only (also [demo], [centralized])
    min_agents = 4

Keys are the commands' long flags (dashes or underscores). A key no command knows, a value the
flag would refuse, or a table no command reads is a one-line error naming the file and the key,
so a typo never silently falls back to a default. Relative paths are read from the file's
folder, so a run file works from any working directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SHARED = "run"
# Settings a run file never holds: the file itself and where the run's outputs go are chosen
# per invocation.
NOT_IN_FILES = frozenset({"help", "config", "version"})


class RunConfigError(ValueError):
    """The run file cannot be read, or names a setting or value no command accepts."""


def add_config_argument(parser: argparse.ArgumentParser, command: str) -> None:
    """Give `command` (its [command] table's name) a --config flag; config_commands finds it."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="RUN.toml",
        help=f"run file with this command's settings ([run] and [{command}] tables); flags "
        "given here override it (default: none, the built-in defaults)",
    )
    parser.set_defaults(config_command=command)


def config_commands(*parsers: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The commands that read run files, by table name, found in these parsers and their
    subcommands (those add_config_argument gave a --config)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for parser in parsers:
        command = parser.get_default("config_command")
        if command is not None:
            found[command] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found |= config_commands(*action.choices.values())
    return found


def read(path: Path) -> dict[str, Any]:
    # Imported here: an agent-only install on Python 3.10 has no tomli, and needs none.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise RunConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise RunConfigError(f"{path}: not valid TOML: {error}") from None
    return document


def defaults_from(
    path: Path, command: str, commands: dict[str, argparse.ArgumentParser]
) -> dict[str, Any]:
    """The settings `path` gives `command`, as argparse defaults (dest -> converted value),
    checked exactly as the flags are. [run] keys that `command` lacks but another command has
    are skipped (the centralized baseline has no scheduling policy)."""
    document = read(path)
    for table, values in document.items():
        if table != SHARED and table not in commands:
            known = ", ".join(f"[{name}]" for name in (SHARED, *commands))
            raise RunConfigError(f"{path}: unknown table [{table}]; tables: {known}")
        if not isinstance(values, dict):
            raise RunConfigError(f"{path}: {table} must be a table ([{table}])")
    own = _settings(commands[command])
    everywhere: dict[str, argparse.Action] = {}
    for other in commands.values():
        everywhere = _settings(other) | everywhere
    # Other commands' tables are checked only; [run], then the command's own table (which so
    # wins over [run]) give the defaults.
    ordered = [t for t in document if t not in (SHARED, command)]
    ordered += [t for t in (SHARED, command) if t in document]
    defaults: dict[str, Any] = {}
    for table in ordered:
        settings = own if table in (SHARED, command) else _settings(commands[table])
        for key, value in document[table].items():
            dest = key.replace("-", "_")
            where = f"[{table}] {key}"
            if dest in settings:
                converted = _converted(settings[dest], value, path, where)
                if table in (SHARED, command):
                    defaults[dest] = converted
            elif table == SHARED and dest in everywhere:  # another command's: checked only
                _converted(everywhere[dest], value, path, where)
            else:
                owner = command if table == SHARED else table
                raise RunConfigError(f"{path}: {where}: no such setting for {owner}")
    return defaults


def _settings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in NOT_IN_FILES
    }


def _converted(action: argparse.Action, value: Any, path: Path, where: str) -> Any:
    """A TOML value through the flag's own type and choices (so a file is checked exactly as
    the command line is)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise RunConfigError(f"{path}: {where}: must be true or false, got {value!r}")
        return value
    if isinstance(value, (dict, bool)) or (
        isinstance(value, list) and not all(isinstance(v, (str, int, float)) for v in value)
    ):
        raise RunConfigError(f"{path}: {where}: must be a string, number or list, got {value!r}")
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    convert = action.type or str
    try:
        converted = convert(text)  # type: ignore[operator]
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise RunConfigError(f"{path}: {where}: {error}") from None
    if isinstance(converted, Path) and not converted.is_absolute():
        converted = path.parent / converted
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise RunConfigError(f"{path}: {where}: {converted!r} is not one of {choices}")
    return converted


def resolved(namespace: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """A parsed command's settings as a run file holds them; paths absolute, since a run file's
    relative paths are read from its own folder."""
    values: dict[str, Any] = {}
    for dest in _settings(parser):
        value = getattr(namespace, dest, None)
        values[dest] = str(value.absolute()) if isinstance(value, Path) else value
    return values

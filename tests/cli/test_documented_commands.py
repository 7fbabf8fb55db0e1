"""Every `deft ...` command shown in the READMEs is accepted by the parser as written: a renamed
or removed flag breaks this test, not a user following the docs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lola_deft.cli.main import build_parser
from tests.helpers import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "deploy").rglob("README.md"))]
BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r'^([A-Z_]+)="([^"]*)"$')


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `deft`) for each deft command in a sh block; continuation lines are
    joined, simple VAR="..." assignments of the block expanded, comments and a trailing `&`
    dropped, usage synopses (`[--flag X]`) skipped."""
    commands = []
    for document in DOCUMENTS:
        text = document.read_text()
        for block in BLOCK.finditer(text):
            variables: dict[str, str] = {}
            joined = block.group(1).replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split(" #")[0].strip()
                assignment = ASSIGNMENT.match(line)
                if assignment:
                    variables[assignment.group(1)] = assignment.group(2)
                    continue
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                words = shlex.split(line, comments=True)
                if words[:1] == ["sudo"]:
                    words = words[1:]
                if words[-1:] == ["&"]:
                    words = words[:-1]
                synopsis = any(word.startswith("[") for word in words)  # usage, not an example
                if words[:1] == ["deft"] and not synopsis:
                    where = f"{document.relative_to(ROOT)}: {line[:60]}"
                    commands.append((where, words[1:]))
    return commands


COMMANDS = documented_commands()


def test_the_docs_show_the_main_commands() -> None:
    shown = {argv[0] for _, argv in COMMANDS}
    assert {"certs", "scheduler", "coordinator", "agent", "testbed"} <= shown


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_parses(where: str, argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse's way of refusing (it prints why)
        pytest.fail(f"{where}: refused by the parser (exit {exit.code}): {argv}")


TOML = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("command", ["coordinator", "demo", "centralized"])
def test_every_documented_run_file_is_accepted(command: str, tmp_path: Path) -> None:
    """The README's run-file examples hold only settings and values the commands accept."""
    from lola_deft.cli.main import parse

    blocks = [block for document in DOCUMENTS for block in TOML.findall(document.read_text())]
    assert blocks, "the README shows no run file"
    words = ["coordinator", "serve"] if command == "coordinator" else [command]
    for index, block in enumerate(blocks):
        run = tmp_path / f"run-{index}.toml"
        run.write_text(block)
        parse([*words, "--config", str(run)])  # a refusal exits (fails the test)

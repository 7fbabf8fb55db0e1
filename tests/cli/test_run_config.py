"""Run files (--config run.toml): values become the command's defaults, flags override them,
every value is checked as its flag is, and `deft config show` prints a file that reproduces the
settings it shows."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lola_deft.cli.common import TRAINING_DEFAULTS
from lola_deft.cli.main import main, parse

TRAINING = list(TRAINING_DEFAULTS)


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line error a refused command line prints (exit status 2)."""
    with pytest.raises(SystemExit) as exit:
        parse(argv)
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_three_training_commands_share_their_defaults() -> None:
    coordinator = parse(["coordinator", "serve"])
    demo = parse(["demo"])
    centralized = parse(["centralized"])
    for key in [*TRAINING, "model", "data"]:
        assert getattr(coordinator, key) == getattr(demo, key) == getattr(centralized, key), key
    assert coordinator.policy == demo.policy


def test_a_run_file_sets_defaults_and_flags_override_it(tmp_path: Path) -> None:
    run = tmp_path / "run.toml"
    run.write_text(
        "[run]\nlr = 2e-3\nlora_targets = ['query', 'key']\nmodel = 'models/mine'\n"
        "policy = 'ba'\n[coordinator]\nmin-agents = 3\n[demo]\nagents = 7\n"
    )
    coordinator = parse(["coordinator", "serve", "--config", str(run), "--lr", "1e-4"])
    assert coordinator.lr == 1e-4  # the flag wins
    assert coordinator.lora_targets == "query,key"
    assert coordinator.model == tmp_path / "models" / "mine"  # relative to the file
    assert coordinator.min_agents == 3
    assert coordinator.policy == "ba"
    demo = parse(["demo", "--config", str(run)])
    assert (demo.agents, demo.lr, demo.policy) == (7, 2e-3, "ba")
    centralized = parse(["centralized", "--config", str(run)])  # no policy: [run]'s skipped
    assert centralized.lr == 2e-3 and not hasattr(centralized, "policy")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[run]\nlrr = 1e-3\n", "[run] lrr: no such setting for coordinator"),
        ("[run]\nlr = -1\n", "[run] lr: must be a finite number > 0"),
        ("[run]\npolicy = 'nope'\n", "[run] policy: unknown policy 'nope'"),
        ("[run]\ntask = 'sst3'\n", "[run] task: unknown task 'sst3'"),
        ("[demo]\nagents = 0\n", "[demo] agents: must be >= 1"),
        ("[coordinator]\nagents = 3\n", "[coordinator] agents: no such setting for coordinator"),
        ("[coordinator]\nnew_run = 'yes'\n", "[coordinator] new_run: must be true or false"),
        ("[coordinator]\nhead_aggregation = 'max'\n", "'max' is not one of mean, median"),
        ("[coordinator]\nport = 70000\n", "a port is 0..65535"),
        ("[trainer]\nlr = 1\n", "unknown table [trainer]"),
        ("[run\n", "not valid TOML"),
        ("run = 3\n", "run must be a table"),
        ("[run]\nseed = {a = 1}\n", "[run] seed: must be a string, number or list"),
    ],
)
def test_a_bad_run_file_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    run = tmp_path / "run.toml"
    run.write_text(text)
    line = refusal(["coordinator", "serve", "--config", str(run)], capsys)
    assert line.startswith(f"deft coordinator: error: {run}: "), line
    assert message in line


def test_a_missing_run_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(["centralized", "--config", str(tmp_path / "none.toml")], capsys)
    assert "none.toml: cannot read: No such file or directory" in line


@pytest.mark.parametrize("command", ["coordinator", "demo", "centralized"])
def test_config_show_prints_a_run_file_that_reproduces_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main(["config", "show", "--for", command, "--", "--lr", "3e-4", "--seed", "7"]) == 0
    shown = capsys.readouterr().out
    assert "lr = 0.0003" in shown and "seed = 7" in shown
    run = tmp_path / "run.toml"
    run.write_text(shown)
    assert main(["config", "show", "--for", command, "--config", str(run)]) == 0
    again = capsys.readouterr().out
    body = [line for line in again.splitlines() if not line.startswith("#")]
    assert body == [line for line in shown.splitlines() if not line.startswith("#")]


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    from lola_deft.cli.main import build_parser

    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for word, child in action.choices.items():
                    walk(f"{name} {word}", child)

    walk("deft", build_parser())
    return found


@pytest.mark.parametrize(("name", "parser"), every_parser(), ids=[n for n, _ in every_parser()])
def test_every_flag_says_what_it_does_and_shows_its_default(
    name: str, parser: argparse.ArgumentParser
) -> None:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        shown = formatter._expand_help(action)  # type: ignore[attr-defined]
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert "default" in shown.lower(), f"{name} {action.option_strings}: {shown!r}"


def test_deft_version(capsys: pytest.CaptureFixture[str]) -> None:
    from lola_deft import __version__

    with pytest.raises(SystemExit) as exit:
        parse(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"deft {__version__}"


def test_a_commands_own_table_wins_over_run_whatever_the_order(tmp_path: Path) -> None:
    run = tmp_path / "run.toml"
    run.write_text("[coordinator]\nlr = 1e-4\n[run]\nlr = 2e-3\n")
    assert parse(["coordinator", "serve", "--config", str(run)]).lr == 1e-4
    assert parse(["demo", "--config", str(run)]).lr == 2e-3

"""User mistakes on the long-running roles give one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_deft


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["coordinator", "serve", "--model", "/nonexistent/model"],
            "deft coordinator: error: /nonexistent/model: not a model directory (no config.json)",
        ),
        (
            ["coordinator", "serve", "--data", "/nonexistent/glue"],
            "deft coordinator: error: /nonexistent/glue/dev.tsv: no such file",
        ),
        (["centralized", "--task", "wnli"], "deft centralized: error: unknown GLUE task 'wnli'"),
        (
            ["agent", "--coordinator", "127.0.0.1:1", "--model", "/nonexistent/model"],
            "deft agent: error: /nonexistent/model: not a model directory",
        ),
    ],
)
def test_bad_folders_and_names(args: list[str], message: str) -> None:
    result = run_deft(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_without_a_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_deft(
        "coordinator",
        "serve",
        "--model",
        str(tiny_model_dir),
        "--resume",
        "--checkpoint-dir",
        str(tmp_path / "none"),
        "--port",
        "0",
    )
    assert result.returncode == 2
    assert "no checkpoint to resume from" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--report-poll", "-1", "argument --report-poll: must be > 0 seconds, got '-1'"),
        ("--forget-after", "0", "argument --forget-after: must be > 0 seconds, got '0'"),
        ("--round-timeout", "inf", "argument --round-timeout: must be > 0 seconds"),
        ("--max-devices", "0", "argument --max-devices: must be >= 1, got '0'"),
    ],
)
def test_server_bounds_must_be_positive(flag: str, value: str, message: str) -> None:
    result = run_deft("coordinator", "serve", flag, value)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr

"""User mistakes on the long-running roles give one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_deft


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["coordinator", "serve", "--insecure", "--model", "/nonexistent/model"],
            "deft coordinator: error: /nonexistent/model: not a model directory (no config.json)",
        ),
        (
            ["coordinator", "serve", "--insecure", "--data", "/nonexistent/glue"],
            "deft coordinator: error: /nonexistent/glue/dev.tsv: no such file",
        ),
        (["centralized", "--task", "wnli"], "argument --task: unknown task 'wnli'; choose from"),
        (
            ["coordinator", "serve", "--policy", "fastest"],
            "argument --policy: unknown policy 'fastest'; choose from jbba, ba,",
        ),
        (["demo", "--task", "imdb"], "argument --task: unknown task 'imdb'; choose from cola,"),
        (
            ["demo", "--task", "cola"],
            "deft demo: error: the embedded data (sst2-mini, synthetic) is SST-2; --task cola "
            "needs --data DIR",
        ),
        (
            [
                "agent",
                "--coordinator",
                "127.0.0.1:1",
                "--insecure",
                "--model",
                "/nonexistent/model",
            ],
            "deft agent: error: /nonexistent/model: not a model directory",
        ),
    ],
)
def test_bad_folders_names_and_choices(args: list[str], message: str) -> None:
    """Choices (task, policy) are checked when the flags are read, before anything starts."""
    result = run_deft(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_without_a_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_deft(
        "coordinator",
        "serve",
        "--insecure",
        "--model",
        str(tiny_model_dir),
        "--resume",
        "--runs-dir",
        str(tmp_path / "none"),
        "--port",
        "0",
    )
    assert result.returncode == 2
    assert "no unfinished run to resume" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--report-poll", "-1", "argument --report-poll: must be > 0 seconds, got '-1'"),
        ("--forget-after", "0", "argument --forget-after: must be > 0 seconds, got '0'"),
        ("--round-timeout", "inf", "argument --round-timeout: must be > 0 seconds"),
        ("--max-devices", "0", "argument --max-devices: must be >= 1, got '0'"),
        ("--liveness-timeout", "1", "argument --liveness-timeout: must be >= 3 seconds"),
        ("--grad-norm-factor", "nan", "argument --grad-norm-factor: must be a finite number > 0"),
    ],
)
def test_server_bounds_must_be_positive(flag: str, value: str, message: str) -> None:
    result = run_deft("coordinator", "serve", flag, value)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["coordinator", "serve"],
            "deft coordinator: error: deft coordinator needs --tls-cert, --tls-key, --tls-ca "
            "for mutual TLS",
        ),
        (["agent", "--coordinator", "127.0.0.1:1"], "deft agent: error: deft agent needs"),
        (["scheduler", "serve", "--port", "0"], "deft scheduler: error: deft scheduler needs"),
        (["health", "127.0.0.1:1"], "deft health: error: deft health needs"),
        (
            ["coordinator", "serve", "--insecure", "--tls-ca", "ca.pem"],
            "--insecure and --tls-* exclude each other",
        ),
        (
            ["coordinator", "serve", "--tls-cert", "c.pem", "--tls-key", "c.key"],
            "needs --tls-ca for mutual TLS",
        ),
        (
            ["coordinator", "serve", "--insecure", "--allowed-devices", "devices.txt"],
            "--allowed-devices and --revoked-certs need device identities",
        ),
    ],
)
def test_plaintext_takes_an_explicit_insecure(args: list[str], message: str) -> None:
    result = run_deft(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_insecure_is_logged_as_a_warning(tiny_model_dir: Path) -> None:
    result = run_deft(
        "coordinator", "serve", "--insecure", "--model", str(tiny_model_dir), "--data", "/none"
    )
    assert "WARNING" in result.stderr and "--insecure: plaintext gRPC" in result.stderr


def test_the_parsers_head_combiners_are_the_aggregators() -> None:
    """The parser keeps its own copy (it must build without the server package): same list."""
    from lola_deft.cli.coordinator import HEAD_COMBINERS as offered
    from lola_deft.server.aggregation import HEAD_COMBINERS as implemented

    assert offered == implemented


def test_an_unreachable_coordinator_is_named_with_the_reason() -> None:
    """A wrong address is a one-line error naming it and why, after --connect-attempts tries,
    before the model is loaded, not a silent hang."""
    from lola_deft.server.net import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = run_deft(
        "agent", "--insecure", "--coordinator", address, "--connect-attempts", "2", timeout=60
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("deft agent:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"deft agent: error: cannot reach the coordinator at {address}: Connection refused ("
    )
    assert "2 attempts" in errors[0] and "--connect-attempts 0" in errors[0]
    assert f"coordinator {address} not reachable: Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_connect_attempts_must_be_a_count() -> None:
    result = run_deft("agent", "--coordinator", "x:1", "--connect-attempts", "-1")
    assert result.returncode == 2
    assert "argument --connect-attempts: must be >= 0, got '-1'" in result.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly() -> None:
    """`deft compare | head -1`: no BrokenPipeError traceback, the shell's SIGPIPE status."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "lola_deft.cli.main", "compare"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert finished.returncode == 141
    assert "Traceback" not in finished.stderr

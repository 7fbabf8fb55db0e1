"""Helpers shared by tests that start real LoLa-DEFT processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def deft_command(*args: str) -> list[str]:
    """The `deft` CLI run by this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "server.cli", *args]


def run_deft(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        deft_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def start_deft(
    *args: str, ready: str, timeout: float = 60
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start a long-running `deft` process and wait for a stdout line matching `ready`."""
    process = subprocess.Popen(
        deft_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(ready, line)
        if match:
            return process, match
    process.kill()
    raise RuntimeError(f"deft {' '.join(args)} did not print {ready!r}; output:\n{''.join(seen)}")

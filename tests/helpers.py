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
    return [sys.executable, "-m", "lola_deft.cli.main", *args]


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


class LocalCluster:
    """Scheduler, coordinator and agents as real `deft` processes on loopback, all killed on
    exit. Each start_* returns the process; addresses are kept on the cluster."""

    def __init__(self, model: Path, work: Path) -> None:
        self.model = model
        self.work = work
        self.processes: list[subprocess.Popen[str]] = []
        self.scheduler_address = ""
        self.coordinator_address = ""

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def _start(self, *args: str, ready: str) -> tuple[subprocess.Popen[str], re.Match[str]]:
        process, match = start_deft(*args, ready=ready)
        self.processes.append(process)
        return process, match

    def start_scheduler(self, *extra: str) -> subprocess.Popen[str]:
        process, match = self._start(
            "scheduler",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *extra,
            ready=r"listening on .*?:(\d+)",
        )
        self.scheduler_address = f"127.0.0.1:{match.group(1)}"
        return process

    def start_coordinator(
        self, *extra: str, port: int = 0, ready: str = r"coordinator listening on .*?:(\d+)"
    ) -> tuple[subprocess.Popen[str], re.Match[str]]:
        process, match = self._start(
            "coordinator",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--scheduler",
            self.scheduler_address,
            "--model",
            str(self.model),
            "--checkpoint-dir",
            str(self.work / "ck"),
            "--history",
            str(self.work / "history.json"),
            "--threads",
            "1",
            *extra,
            ready=ready,
        )
        if port:
            self.coordinator_address = f"127.0.0.1:{port}"
        elif match.groups():
            self.coordinator_address = f"127.0.0.1:{match.group(1)}"
        return process, match

    def start_agent(self, device_id: str, *extra: str) -> subprocess.Popen[str]:
        process, _ = self._start(
            "agent",
            "--coordinator",
            self.coordinator_address,
            "--id",
            device_id,
            "--model",
            str(self.model),
            "--threads",
            "1",
            "--profile-cache",
            str(self.work / "profiles"),
            *extra,
            ready="registered",
        )
        return process

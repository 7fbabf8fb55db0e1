"""Helpers shared by tests that start real LoLa-DEFT processes (through the one launcher,
lola_deft.server.cluster)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lola_deft.server.cluster import READY_COORDINATOR, Cluster, Managed, deft_command

ROOT = Path(__file__).resolve().parents[1]


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
    """Start a long-running `deft` process and wait for an output line matching `ready`."""
    log = Path(tempfile.mkdtemp(prefix="deft-test-")) / "output.log"
    managed = Managed(args[0], deft_command(*args), log)
    try:
        return managed.process, managed.wait_for(ready, timeout)
    except RuntimeError:
        managed.stop(grace_s=0)
        raise


def start_scheduler_process() -> tuple[subprocess.Popen[str], str]:
    """`deft scheduler serve` on a free loopback port (plaintext); returns it and its address."""
    process, match = start_deft(
        "scheduler",
        "serve",
        "--insecure",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        ready=r"listening on .*:(\d+)",
    )
    return process, f"127.0.0.1:{match.group(1)}"


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether `condition` became true within `timeout` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class LocalCluster(Cluster):
    """The launcher with a model, a work folder and test-sized defaults; start_* return the
    processes (subprocess.Popen) the tests signal and wait for."""

    def __init__(
        self,
        model: Path,
        work: Path,
        *,
        certs: Path | None = None,
        agent_python: str = sys.executable,
    ) -> None:
        super().__init__(work / "logs", ready_timeout_s=120, certs=certs, agent_python=agent_python)
        self.model = model
        self.work = work

    def run_dirs(self) -> list[Path]:
        """The run folders its coordinators made (a restarted coordinator resumes its run)."""
        return sorted(p.parent for p in (self.work / "runs").glob("*/run.json"))

    def start_scheduler(  # type: ignore[override]
        self, *extra: str, host: str = "127.0.0.1", port: int = 0
    ) -> subprocess.Popen[str]:
        return super().start_scheduler(*extra, host=host, port=port).process

    def start_coordinator(  # type: ignore[override]
        self, *extra: str, host: str = "127.0.0.1", port: int = 0, ready: str = READY_COORDINATOR
    ) -> tuple[subprocess.Popen[str], re.Match[str]]:
        managed, match = super().start_coordinator(
            "--model",
            str(self.model),
            "--runs-dir",
            str(self.work / "runs"),
            "--history",
            str(self.work / "history.json"),
            "--threads",
            "1",
            *extra,
            host=host,
            port=port,
            ready=ready,
        )
        if port:
            self.coordinator_address = f"127.0.0.1:{port}"
        assert match is not None
        return managed.process, match

    def start_agent(  # type: ignore[override]
        self, device_id: str, *extra: str, ready: str | None = "registered"
    ) -> subprocess.Popen[str]:
        return (
            super()
            .start_agent(
                device_id,
                "--model",
                str(self.model),
                "--threads",
                "1",
                "--profile-cache",
                str(self.work / "profiles"),
                *extra,
                ready=ready,
            )
            .process
        )

"""The one launcher of LoLa-DEFT processes: scheduler, coordinator and agents as real `deft`
processes (the demo, the testbed, the benchmarks and the tests all start them through here).

Each process's output goes to its log file line by line and to a queue the launcher reads, so a
caller can wait for a ready line ("listening on HOST:PORT": ports may be 0) or follow the
coordinator's round lines. A process that exits before it is ready raises ClusterError with its
last lines; leaving the context stops every process (SIGTERM, then SIGKILL).

Given a `deft certs` folder every link is mutual TLS, each process with its own certificate;
without one every process runs --insecure (loopback demos and tests of the plaintext path).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

READY_SCHEDULER = r"listening on (\S+):(\d+)"
READY_COORDINATOR = r"coordinator listening on (\S+):(\d+)"
READY_AGENT = r"registered"
STOP_GRACE_S = 5.0
PARENT_ENV = "DEFT_DIE_WITH_PARENT"  # read by lola_deft.cli.main


class ClusterError(RuntimeError):
    """A process did not start as expected; the message carries its last lines."""


def deft_command(*args: str, python: str = sys.executable) -> list[str]:
    """`deft ARGS` with this interpreter, or another (works without the console script on
    PATH)."""
    return [python, "-m", "lola_deft.cli.main", *args]


class Managed:
    """One started process: its output is copied to `log` and queued for `wait_for`/`lines`."""

    def __init__(self, name: str, command: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        self.tail: deque[str] = deque(maxlen=15)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # The child asks the kernel for SIGTERM when this process dies (even by SIGKILL), so
            # no process of a demo or testbed outlives it.
            env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())},
            start_new_session=True,  # a Ctrl-C in the caller's terminal reaches the caller only
        )
        threading.Thread(target=self._copy, name=f"log-{name}", daemon=True).start()

    def _copy(self) -> None:
        assert self.process.stdout is not None
        with self.log.open("w") as handle:
            for line in self.process.stdout:
                handle.write(line)
                handle.flush()
                self.tail.append(line)
                self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern`; ClusterError if the process ends first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self.process.wait()
                raise ClusterError(
                    f"{self.name} exited with status {self.process.returncode} before it was "
                    f"ready: {self.last_error()} (log: {self.log})"
                )
            match = re.search(pattern, line)
            if match:
                return match
        raise ClusterError(
            f"{self.name} was not ready after {timeout:.0f} s: {self.last_error()} "
            f"(log: {self.log})"
        )

    def last_error(self) -> str:
        """The process's own last error line (a `deft ...: error: ...` line, else its last
        line that says error, else its last line): what a user needs, not a traceback."""
        lines = [line.strip() for line in self.tail if line.strip()]
        for marker in (": error: ", "error"):
            for line in reversed(lines):
                if marker in line.lower():
                    return line
        return lines[-1] if lines else "no output"

    def lines(self) -> Iterator[str]:
        """Output lines from here on, until the process ends."""
        while (line := self._lines.get()) is not None:
            yield line

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


class Cluster:
    def __init__(
        self,
        logs: Path,
        *,
        ready_timeout_s: float = 300.0,
        certs: Path | None = None,
        agent_python: str = sys.executable,
    ) -> None:
        self.logs = logs
        self.certs = certs
        self.agent_python = agent_python  # agents may run on another install (another stack)
        self.ready_timeout_s = ready_timeout_s
        self.processes: list[Managed] = []
        self.scheduler_address = ""
        self.coordinator_address = ""
        logs.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def security(self, role: str, certificate: Path | None = None) -> list[str]:
        """The TLS flags of a process: `role`.pem/.key from the certs folder (or `certificate`
        and its .key), or --insecure without a folder."""
        if self.certs is None:
            return ["--insecure"]
        cert = certificate or self.certs / f"{role}.pem"
        return [
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(cert.with_suffix(".key")),
            "--tls-ca",
            str(self.certs / "ca.pem"),
        ]

    def device_certificate(self, device_id: str) -> Path | None:
        return None if self.certs is None else self.certs / "devices" / f"{device_id}.pem"

    def start(
        self,
        name: str,
        *args: str,
        ready: str | None = None,
        prefix: Sequence[str] = (),
        python: str = sys.executable,
    ) -> tuple[Managed, re.Match[str] | None]:
        """Start `[prefix] deft ARGS`; with `ready`, wait for a matching line."""
        command = [*prefix, *deft_command(*args, python=python)]
        managed = Managed(name, command, self.logs / f"{name}.log")
        self.processes.append(managed)
        match = managed.wait_for(ready, self.ready_timeout_s) if ready else None
        return managed, match

    def start_scheduler(self, *extra: str, host: str = "127.0.0.1", port: int = 0) -> Managed:
        managed, match = self.start(
            "scheduler",
            "scheduler",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            *self.security("scheduler"),
            *extra,
            ready=READY_SCHEDULER,
        )
        assert match is not None
        self.scheduler_address = f"127.0.0.1:{match.group(2)}"
        return managed

    def start_coordinator(
        self, *extra: str, host: str = "127.0.0.1", port: int = 0, ready: str = READY_COORDINATOR
    ) -> tuple[Managed, re.Match[str] | None]:
        managed, match = self.start(
            "coordinator",
            "coordinator",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            # Any free data port (agents learn it when they register): "next" could find
            # --port + 1 taken by another process's connection, and a restart needs none fixed.
            "--data-port",
            "0",
            "--scheduler",
            self.scheduler_address,
            *self.security("coordinator"),
            *extra,
            ready=ready,
        )
        if match is not None and ready == READY_COORDINATOR:
            self.coordinator_address = f"127.0.0.1:{match.group(2)}"
        return managed, match

    def start_agent(
        self,
        device_id: str,
        *extra: str,
        coordinator: str | None = None,
        prefix: Sequence[str] = (),
        ready: str | None = READY_AGENT,
    ) -> Managed:
        managed, _ = self.start(
            device_id,
            "agent",
            "--coordinator",
            coordinator or self.coordinator_address,
            "--id",
            device_id,
            *self.security("device", self.device_certificate(device_id)),
            *extra,
            ready=ready,
            prefix=prefix,
            python=self.agent_python,
        )
        return managed

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to every process at once (agents first), then SIGKILL to whatever still runs
        after grace_s in all; returns once every process has ended. An agent busy loading its
        model does not look at SIGTERM, so waiting for each in turn took a minute."""
        running = [m for m in reversed(self.processes) if m.process.poll() is None]
        for managed in running:
            managed.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for managed in running:
            try:
                managed.process.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                managed.process.kill()
        for managed in running:
            managed.process.wait()

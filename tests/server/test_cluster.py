"""The process launcher: nothing it started outlives it, and stopping never hangs on one process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from lola_deft.server.cluster import Cluster, Managed
from tests.helpers import ROOT, eventually


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_processes_of_a_killed_launcher_stop_too(tmp_path: Path) -> None:
    launcher = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from lola_deft.server.cluster import Cluster
        cluster = Cluster(Path({str(tmp_path)!r}) / "logs", ready_timeout_s=60)
        managed = cluster.start_scheduler()
        print(managed.process.pid, flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    assert not gone(child)
    process.send_signal(signal.SIGKILL)  # no handler, no cleanup code runs in the launcher
    process.wait()
    assert eventually(lambda: gone(child), timeout=30)


def test_stopping_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(600)",
    ]
    cluster = Cluster(tmp_path / "logs")
    managed = Managed("stubborn", stubborn, tmp_path / "stubborn.log")
    cluster.processes.append(managed)
    managed.wait_for("ready", 30)
    cluster.stop(grace_s=0.5)
    assert managed.process.returncode == -signal.SIGKILL

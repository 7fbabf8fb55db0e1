"""Ports: no second server on a busy port (no SO_REUSEPORT), and metrics only where gRPC binds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil

from lola_deft.scheduler.service import start_scheduler
from tests.helpers import run_deft


def listening_addresses(port: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.Process(os.getpid()).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def test_a_second_server_on_a_busy_port_fails_and_names_it() -> None:
    first = start_scheduler("127.0.0.1", 0, metrics_port=0)
    try:
        port, metrics = first.port, first.metrics_port
        assert metrics is not None
        second = run_deft(
            "scheduler", "serve", "--insecure", "--host", "127.0.0.1", "--port", str(port)
        )
        assert second.returncode == 2
        assert f"cannot bind the scheduler to 127.0.0.1:{port}" in second.stderr
        busy_metrics = run_deft(
            "scheduler", "serve", "--insecure", "--port", "0", "--metrics-port", str(metrics)
        )
        assert busy_metrics.returncode == 2
        assert (
            f"cannot serve the scheduler's metrics on 0.0.0.0:{metrics} (--metrics-port)"
            in busy_metrics.stderr
        )
        for result in (second, busy_metrics):
            assert "Traceback" not in result.stderr
    finally:
        first.stop(grace=None)


def test_metrics_listen_on_the_grpc_host_unless_told_otherwise() -> None:
    loopback = start_scheduler("127.0.0.1", 0, metrics_port=0)
    everywhere = start_scheduler("127.0.0.1", 0, metrics_port=0, metrics_host="0.0.0.0")
    try:
        assert loopback.metrics_port is not None and everywhere.metrics_port is not None
        assert listening_addresses(loopback.metrics_port) == {"127.0.0.1"}
        assert listening_addresses(everywhere.metrics_port) == {"0.0.0.0"}
    finally:
        loopback.stop(grace=None)
        everywhere.stop(grace=None)


def test_a_busy_metrics_port_stops_the_coordinator_and_names_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Before any round: the start fails, the process ends (no gRPC server left running)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_deft(
            "coordinator", "serve", "--insecure", "--host", "127.0.0.1", "--port", "0",
            "--metrics-port", str(port), "--model", str(tiny_model_dir),
            "--runs-dir", str(tmp_path / "runs"),
        )  # fmt: skip
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert line == (
        f"deft coordinator: error: cannot serve the coordinator's metrics on 127.0.0.1:{port} "
        "(--metrics-port): Address already in use"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

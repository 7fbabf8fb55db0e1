"""A live LoLa-DEFT system for the deployment checks: scheduler, coordinator and 3 agents as real
processes on loopback, each exporting Prometheus metrics, on a tiny random encoder."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lola_deft.ml.random_encoder import make_random_encoder
from lola_deft.server.net import free_port
from tests.helpers import LocalCluster


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


@dataclass
class LiveSystem:
    scheduler_metrics: int
    coordinator_metrics: int
    agent_metrics: list[int]

    def wait_for_rounds(self, rounds: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in scrape(self.coordinator_metrics).splitlines():
                if line.startswith("deft_round ") and float(line.split()[1]) >= rounds:
                    return
            time.sleep(0.5)
        raise AssertionError(f"the coordinator did not complete {rounds} rounds in {timeout} s")


@pytest.fixture(scope="session")
def live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    root = tmp_path_factory.mktemp("live")
    model = make_random_encoder(root / "model", "tiny", layers=3)
    system = LiveSystem(free_port(), free_port(), [free_port() for _ in range(3)])
    with LocalCluster(model, root) as cluster:
        cluster.start_scheduler("--metrics-port", str(system.scheduler_metrics))
        cluster.start_coordinator(
            "--rounds",
            "100000",
            "--report-wait",
            "0.2",
            "--metrics-port",
            str(system.coordinator_metrics),
        )
        for index, port in enumerate(system.agent_metrics):
            cluster.start_agent(
                f"dev{index}", "--shard", "auto/3", "--slowdown", "4", "--metrics-port", str(port)
            )
        yield system

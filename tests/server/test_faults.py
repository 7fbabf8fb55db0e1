"""Faults on real processes: SIGKILL of an agent that holds a block, and of the scheduler.

Both end in a recovery within the round or within seconds, with every block still trained.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from lola_deft.server.export import read_history
from tests.helpers import LocalCluster


def test_a_killed_agents_block_is_trained_by_another_device(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with LocalCluster(tiny_model_dir, tmp_path) as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(
            "--rounds", "3", "--report-wait", "0.5", "--min-agents", "4", "--liveness-timeout", "4"
        )
        agents = {
            f"dev{i}": cluster.start_agent(f"dev{i}", "--shard", f"{i}/4", "--slowdown", "30")
            for i in range(4)
        }
        managed = next(m for m in cluster.processes if m.name == "coordinator")
        holders: dict[str, str] = {}
        for line in managed.lines():
            match = re.search(r"round 2 dispatched: (.*)", line)
            if match:
                holders = dict(entry.split(":")[::-1] for entry in match.group(1).split())
                break
        victim = next(device for device in sorted(holders) if holders[device] == "1")
        agents[victim].send_signal(signal.SIGKILL)  # mid-compute: 30x slowed down
        assert coordinator.wait(timeout=240) == 0
    second = read_history(tmp_path / "history.json").rounds[1]
    assert second.blocks_updated == [1, 2, 3]
    (moved,) = second.reassignments
    assert moved.block == 1 and moved.from_device == victim and moved.to_device != victim
    assert moved.reason == "stopped responding"


def test_rounds_go_on_in_process_while_the_scheduler_is_down(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with LocalCluster(tiny_model_dir, tmp_path) as cluster:
        scheduler = cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(
            "--rounds", "4", "--report-wait", "0.3", "--scheduler-timeout", "1"
        )
        for i in range(3):
            cluster.start_agent(f"dev{i}", "--shard", f"{i}/3", "--slowdown", "4")
        managed = next(m for m in cluster.processes if m.name == "coordinator")
        for line in managed.lines():
            if line.startswith("round   1/4"):
                scheduler.send_signal(signal.SIGKILL)
                break
        assert coordinator.wait(timeout=240) == 0
    rounds = read_history(tmp_path / "history.json").rounds
    assert [r.blocks_updated for r in rounds] == [[1, 2, 3]] * 4
    assert rounds[0].allocator == "service"
    assert {r.allocator for r in rounds[2:]} == {"fallback"}
    assert all(r.policy == "jbba" for r in rounds)  # the same policy, solved in-process

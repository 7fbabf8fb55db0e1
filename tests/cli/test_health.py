"""`deft health --agent`: an agent is healthy only while the coordinator keeps answering it."""

from __future__ import annotations

import time

from lola_deft.device_agent.metrics import AgentMetrics
from tests.helpers import run_deft


def test_an_agent_is_healthy_only_while_the_coordinator_answers() -> None:
    metrics = AgentMetrics("dev0")
    port = metrics.serve(0, "127.0.0.1")
    target = f"127.0.0.1:{port}"
    never = run_deft("health", "--agent", target)
    assert never.returncode == 1 and "has not reached the coordinator yet" in never.stderr
    metrics.contact()
    fresh = run_deft("health", "--agent", target, "--max-silence", "60")
    assert fresh.returncode == 0, fresh.stderr
    metrics.last_contact.labels("dev0").set(time.time() - 300)  # lost it five minutes ago
    lost = run_deft("health", "--agent", target, "--max-silence", "60")
    assert lost.returncode == 1 and "no answer from the coordinator for 300 s" in lost.stderr
    gone = run_deft("health", "--agent", "127.0.0.1:1")
    assert gone.returncode == 1 and "agent metrics unreachable" in gone.stderr

"""Agents on another install than the coordinator's: `make compat` points DEFT_AGENT_PYTHON at
an agent-only environment with the oldest supported transformers, peft, grpcio, protobuf and
numpy, and these agents must train with today's coordinator and scheduler over mutual TLS."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import LocalCluster

AGENT_PYTHON = os.environ.get("DEFT_AGENT_PYTHON")
VERSIONS = (
    "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
    "('torch', 'transformers', 'peft', 'grpcio', 'protobuf', 'numpy')}))"
)


@pytest.mark.skipif(
    AGENT_PYTHON is None,
    reason="needs DEFT_AGENT_PYTHON, an agent install of other versions (`make compat`)",
)
def test_agents_of_another_stack_train_with_this_coordinator(
    tiny_model_dir: Path, tmp_path: Path, certs: Path
) -> None:
    assert AGENT_PYTHON is not None
    agent_stack = json.loads(
        subprocess.run(
            [AGENT_PYTHON, "-c", VERSIONS], capture_output=True, text=True, check=True
        ).stdout
    )
    print(f"agents run on {agent_stack}")
    with LocalCluster(tiny_model_dir, tmp_path, certs=certs, agent_python=AGENT_PYTHON) as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator("--rounds", "2", "--report-wait", "0.3")
        agents = [cluster.start_agent(f"dev{i}", "--shard", f"{i}/3") for i in range(3)]
        assert coordinator.wait(timeout=300) == 0
        for agent in agents:
            assert agent.wait(timeout=60) == 0  # each heard "finished" and exited cleanly
        [run] = cluster.run_dirs()
    history = json.loads((run / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [1, 2]
    for record in history["rounds"]:
        assert sorted(record["blocks_updated"]) == [1, 2, 3]
        assert record["refusals"] == []
    assert json.loads((run / "run.json").read_text())["status"] == "finished"

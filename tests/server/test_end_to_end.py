"""Scheduler, coordinator and 3 agents as real processes over loopback gRPC, on a tiny random
encoder: adapters change, checkpoints load in peft, and a SIGKILLed coordinator resumes with
identical state while the agents reconnect by themselves."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from lola_deft.ml.model import load_model
from lola_deft.server.export import read_history
from lola_deft.server.net import free_port
from lola_deft.server.training_state import adapter_digest, read_checkpoint
from tests.helpers import LocalCluster

ROUNDS = 6


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def agent_rounds(port: int) -> float:
    """deft_agent_rounds_total of dev0, scraped from its Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'deft_agent_block_seconds_per_iteration{block="1",device="dev0"}' in text
    match = re.search(r'^deft_agent_rounds_total\{device="dev0"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def latest_checkpoint(directory: Path) -> Path | None:
    pointer = directory / "LATEST"
    return directory / pointer.read_text().strip() if pointer.is_file() else None


def test_training_survives_a_killed_coordinator(tiny_model_dir: Path, tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    port = free_port()
    coordinator_args = ("--rounds", str(ROUNDS), "--report-wait", "0.3")
    with LocalCluster(tiny_model_dir, tmp_path) as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(*coordinator_args, port=port)
        [run] = cluster.run_dirs()
        checkpoints = run / "checkpoints"
        agent_metrics_port = free_port()
        agents = [
            cluster.start_agent(
                f"dev{i}",
                "--shard",
                f"{i}/3",
                "--slowdown",
                "8",
                "--max-backoff",
                "1",
                *(["--metrics-port", str(agent_metrics_port)] if i == 0 else []),
            )
            for i in range(3)
        ]

        wait_for(lambda: latest_checkpoint(checkpoints) is not None, 120, "a first checkpoint")
        wait_for(lambda: agent_rounds(agent_metrics_port) >= 1, 60, "dev0's metrics")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(timeout=30)
        killed_at = latest_checkpoint(checkpoints)
        assert killed_at is not None
        saved = read_checkpoint(killed_at)
        rounds_done = saved["round"]
        assert 1 <= rounds_done < ROUNDS
        saved_digest = adapter_digest({k: v.numpy() for k, v in saved["trainable"].items()})

        # The adapters really trained, and the checkpoint is a peft adapter.
        initial = load_model(tiny_model_dir, num_labels=2, seed=0).trainable_state()
        assert any(not torch.equal(initial[k], saved["trainable"][k]) for k in initial)
        base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
        peft_params = dict(
            PeftModel.from_pretrained(base, str(killed_at / "adapter")).named_parameters()
        )
        for name, value in saved["trainable"].items():
            assert torch.equal(peft_params[name], value), name

        # Started again as before (no --resume): it resumes the unfinished run by default.
        resumed, line = cluster.start_coordinator(
            *coordinator_args, port=port, ready=r"resumed from .*"
        )
        expected = (
            f"resumed from {killed_at}: {rounds_done} rounds done, adapter sha256 {saved_digest}"
        )
        assert line.group(0) == expected
        assert resumed.wait(timeout=240) == 0
        for agent in agents:
            assert agent.wait(timeout=60) == 0  # each heard "finished" and exited cleanly
        assert cluster.run_dirs() == [run]  # the same run, resumed; no second one
        assert json.loads((run / "run.json").read_text())["status"] == "finished"

    document = read_history(history)
    assert document.baseline is not None and 0.0 <= document.baseline.scores["accuracy"] <= 1.0
    records = document.rounds
    assert [r.round for r in records] == list(range(1, ROUNDS + 1))
    for record in records:
        assert sorted(a.block for a in record.assignment) == [1, 2, 3]
        assert record.blocks_updated == [1, 2, 3]
        assert record.modelled_latency_s > 0 and record.measured_wall_s > 0
        assert record.eval is not None and 0.0 <= record.eval.scores["accuracy"] <= 1.0
    final = read_checkpoint(checkpoints / f"round-{ROUNDS:06d}")
    assert final["round"] == ROUNDS
    assert [r["round"] for r in final["history"]] == list(range(1, ROUNDS + 1))
    assert not np.isnan([r.train_loss for r in records]).any()
    assert re.fullmatch(r"[0-9a-f]{16}", saved_digest)


def test_agents_that_miss_deadlines_keep_going(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Every upload arrives after the 1 s round deadline: the coordinator closes the rounds
    without them, and the agents, refused for those rounds, carry on until training ends."""
    with LocalCluster(tiny_model_dir, tmp_path) as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(
            "--rounds", "2", "--round-timeout", "1", "--report-wait", "0.3"
        )
        agents = [
            cluster.start_agent(f"late{i}", "--shard", f"{i}/3", "--slowdown", "50")
            for i in range(3)
        ]
        assert coordinator.wait(timeout=180) == 0
        for agent in agents:
            assert agent.wait(timeout=120) == 0
    rounds = read_history(tmp_path / "history.json").rounds
    assert [r.blocks_updated for r in rounds] == [[], []]


def test_real_agents_follow_the_head_and_dtype_settings(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """float16 uploads, and a head that trains in round 1 only: the agents send what the
    coordinator asks (a head gradient where it does not would be refused), and the head stops."""
    history = tmp_path / "history.json"
    with LocalCluster(tiny_model_dir, tmp_path) as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(
            *("--rounds", "2", "--report-wait", "0.3", "--upload-dtype", "float16"),
            *("--head-training", "frozen", "--head-warmup-rounds", "1"),
        )
        [run] = cluster.run_dirs()
        agents = [cluster.start_agent(f"dev{i}", "--shard", f"{i}/3") for i in range(3)]
        assert coordinator.wait(timeout=240) == 0
        for agent in agents:
            assert agent.wait(timeout=60) == 0
    records = read_history(history).rounds
    assert [r.head_blocks for r in records] == [[1, 2, 3], []]
    assert [r.blocks_updated for r in records] == [[1, 2, 3], [1, 2, 3]]
    assert all(not r.refusals for r in records)
    first, second = (
        read_checkpoint(run / "checkpoints" / f"round-{n:06d}")["trainable"] for n in (1, 2)
    )
    head = [name for name in first if "classifier" in name]
    assert head and all(torch.equal(first[name], second[name]) for name in head)
    assert any(not torch.equal(first[n], second[n]) for n in first if n not in head)

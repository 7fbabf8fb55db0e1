"""Scheduler, coordinator and 3 agents as real processes over loopback gRPC, on a tiny random
encoder: adapters change, checkpoints load in peft, and a SIGKILLed coordinator resumes with
identical state while the agents reconnect by themselves."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from device_agent.model import load_model
from server.net import free_port
from server.training_state import adapter_digest
from tests.helpers import start_deft

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
    checkpoints, history = tmp_path / "ck", tmp_path / "history.json"
    scheduler, match = start_deft(
        "scheduler", "serve", "--host", "127.0.0.1", "--port", "0", ready=r"listening on .*:(\d+)"
    )
    scheduler_address = f"127.0.0.1:{match.group(1)}"
    port = free_port()
    coordinator_args = [
        "coordinator",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--scheduler",
        scheduler_address,
        "--model",
        str(tiny_model_dir),
        "--rounds",
        str(ROUNDS),
        "--report-wait",
        "0.3",
        "--checkpoint-dir",
        str(checkpoints),
        "--history",
        str(history),
        "--threads",
        "1",
    ]
    processes: list[subprocess.Popen[str]] = [scheduler]
    try:
        coordinator, _ = start_deft(*coordinator_args, ready="coordinator listening")
        processes.append(coordinator)
        agent_metrics_port = free_port()
        agents = [
            start_deft(
                "agent",
                *(["--metrics-port", str(agent_metrics_port)] if i == 0 else []),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--id",
                f"dev{i}",
                "--model",
                str(tiny_model_dir),
                "--shard",
                f"{i}/3",
                "--threads",
                "1",
                "--slowdown",
                "8",
                "--max-backoff",
                "1",
                "--profile-cache",
                str(tmp_path / "profiles"),
                ready="registered",
            )[0]
            for i in range(3)
        ]
        processes += agents

        wait_for(lambda: latest_checkpoint(checkpoints) is not None, 120, "a first checkpoint")
        wait_for(lambda: agent_rounds(agent_metrics_port) >= 1, 60, "dev0's metrics")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(timeout=30)
        killed_at = latest_checkpoint(checkpoints)
        assert killed_at is not None
        saved = torch.load(killed_at / "state.pt", weights_only=False)
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

        resumed, line = start_deft(*coordinator_args, "--resume", ready=r"resumed from .*")
        processes.append(resumed)
        expected = (
            f"resumed from {killed_at}: {rounds_done} rounds done, adapter sha256 {saved_digest}"
        )
        assert line.group(0) == expected
        assert resumed.wait(timeout=240) == 0
        for agent in agents:
            assert agent.wait(timeout=60) == 0  # each heard "finished" and exited cleanly
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    document = json.loads(history.read_text())
    assert 0.0 <= document["baseline"]["accuracy"] <= 1.0
    records = document["rounds"]
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    for record in records:
        assert sorted(a["block"] for a in record["assignment"]) == [1, 2, 3]
        assert record["blocks_updated"] == [1, 2, 3]
        assert record["modelled_latency_s"] > 0 and record["measured_wall_s"] > 0
        assert 0.0 <= record["eval"]["accuracy"] <= 1.0
    final = torch.load(checkpoints / f"round-{ROUNDS:06d}" / "state.pt", weights_only=False)
    assert final["round"] == ROUNDS
    assert [r["round"] for r in final["history"]] == list(range(1, ROUNDS + 1))
    assert not np.isnan([r["train_loss"] for r in records]).any()
    assert re.fullmatch(r"[0-9a-f]{16}", saved_digest)


def test_agents_that_miss_deadlines_keep_going(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Every upload arrives after the 1 s round deadline: the coordinator closes the rounds
    without them, and the agents, refused for those rounds, carry on until training ends."""
    scheduler, match = start_deft(
        "scheduler", "serve", "--host", "127.0.0.1", "--port", "0", ready=r"listening on .*:(\d+)"
    )
    processes: list[subprocess.Popen[str]] = [scheduler]
    try:
        coordinator, match = start_deft(
            "coordinator",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--scheduler",
            f"127.0.0.1:{match.group(1)}",
            "--model",
            str(tiny_model_dir),
            "--rounds",
            "2",
            "--round-timeout",
            "1",
            "--report-wait",
            "0.3",
            "--checkpoint-dir",
            str(tmp_path / "ck"),
            "--history",
            str(tmp_path / "h.json"),
            ready=r"listening on .*:(\d+)",
        )
        processes.append(coordinator)
        agents = [
            start_deft(
                "agent",
                "--coordinator",
                f"127.0.0.1:{match.group(1)}",
                "--id",
                f"late{i}",
                "--model",
                str(tiny_model_dir),
                "--shard",
                f"{i}/3",
                "--threads",
                "1",
                "--slowdown",
                "50",
                "--profile-cache",
                str(tmp_path / "profiles"),
                ready="registered",
            )[0]
            for i in range(3)
        ]
        processes += agents
        assert coordinator.wait(timeout=180) == 0
        for agent in agents:
            assert agent.wait(timeout=120) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    rounds = json.loads((tmp_path / "h.json").read_text())["rounds"]
    assert [r["blocks_updated"] for r in rounds] == [[], []]

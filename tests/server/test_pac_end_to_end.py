"""`--method pac` with real processes: scheduler, coordinator and 3 agents over loopback on a
tiny random encoder. The side network trains, every upload carries all its tensors, each agent
fills its activation cache (on disk here), releases its backbone once the cache is complete,
the checkpoint's adapter folder loads with `load_adapters`, and an old-style agent (no "pac"
capability) is refused at registration."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch

from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.ml.model import model_fingerprint
from lola_deft.ml.parallel_adapters import WEIGHTS_FILE, load_adapters, side_network
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.server.export import read_history
from lola_deft.server.training_state import read_checkpoint
from tests.helpers import LocalCluster
from tests.server.one_round import one_round_coordinator

ROUNDS = 3
SAMPLES = 48  # 16 per agent: one round of 2 mini-batches of 8 sees every local sample


def small_task(folder: Path, samples: int = SAMPLES) -> Path:
    """The embedded task cut to `samples` training rows (and its dev split)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (EMBEDDED_TASK_DIR / "train.tsv").read_text().splitlines()
    (folder / "train.tsv").write_text("\n".join(lines[: samples + 1]) + "\n")
    dev = (EMBEDDED_TASK_DIR / "dev.tsv").read_text().splitlines()
    (folder / "dev.tsv").write_text("\n".join(dev[:65]) + "\n")
    return folder


def pac_run(
    model: Path, work: Path, rounds: int, agent_flags: Callable[[int], list[str]]
) -> tuple[list[Path], dict[str, str]]:
    """A scheduler, a --method pac coordinator and agents dev0..dev2 (each with its own shard of
    the small task, and `agent_flags(i)`) until training ends; the run folders and the logs by
    process name."""
    data = small_task(work / "task")
    training = ("--method", "pac", "--data", str(data), "--batch-size", "8")
    with LocalCluster(model, work) as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(
            *training, "--rounds", str(rounds), "--report-wait", "0.3"
        )
        agents = [
            cluster.start_agent(
                f"dev{i}", "--data", str(data), "--shard", f"{i}/3", *agent_flags(i)
            )
            for i in range(3)
        ]
        assert coordinator.wait(timeout=300) == 0
        for agent in agents:
            assert agent.wait(timeout=60) == 0
        runs = cluster.run_dirs()
    return runs, {path.stem: path.read_text() for path in (work / "logs").glob("*.log")}


def test_pac_trains_the_side_network_across_devices(tiny_model_dir: Path, tmp_path: Path) -> None:
    caches = tmp_path / "activations"
    # Every state goes to disk: the folder shows what was cached.
    flags = ["--activation-cache", str(caches), "--cache-memory", "0"]
    [run], logs = pac_run(tiny_model_dir, tmp_path, ROUNDS, lambda i: flags)

    records = read_history(tmp_path / "history.json").rounds
    assert [r.round for r in records] == list(range(1, ROUNDS + 1))
    for record in records:
        assert record.blocks_updated == [1, 2, 3]  # three slots, three devices' gradients
        assert {a.device for a in record.assignment} == {"dev0", "dev1", "dev2"}
        assert record.eval is not None
    # Each agent cached its own 16 samples on disk, under one key folder of its own.
    folders = [path for path in caches.iterdir() if path.is_dir()]
    assert len(folders) == 3
    for folder in folders:
        assert len(list(folder.glob("s*.safetensors"))) == SAMPLES // 3
        assert not list(folder.glob("*.tmp"))
    agent_logs = [text for name, text in logs.items() if name.startswith("dev")]
    assert all("the backbone is released" in text for text in agent_logs), agent_logs
    # The checkpoint's adapter folder is the export, and it trained.
    final = read_checkpoint(run / "checkpoints" / f"round-{ROUNDS:06d}")
    exported = load_adapters(run / "checkpoints" / f"round-{ROUNDS:06d}" / "adapter")
    fresh = side_network(tiny_model_dir, 2, seed=0)
    fresh_state = fresh.state_dict()
    for name, value in exported.state_dict().items():
        assert torch.equal(value, final["trainable"][name]), name
    assert any(
        not torch.equal(fresh_state[name], value) for name, value in exported.state_dict().items()
    )
    assert (run / "checkpoints" / f"round-{ROUNDS:06d}" / "adapter" / WEIGHTS_FILE).is_file()
    card = (run / "checkpoints" / f"round-{ROUNDS:06d}" / "adapter" / "README.md").read_text()
    assert "Parallel adapters (PAC+)" in card
    # The card's usage code runs as written (the base model's name pointed at its folder).
    adapter = run / "checkpoints" / f"round-{ROUNDS:06d}" / "adapter"
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace(f'"{tiny_model_dir.name}"', f'"{tiny_model_dir}"')
    code = code.replace('Path(".")', f"Path({str(adapter)!r})")
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    assert printed in {"negative", "positive"}, printed


def test_a_pac_run_refuses_an_agent_that_cannot_train_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with (
        one_round_coordinator(tiny_model_dir, tmp_path, method="pac") as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        request = coordinator_pb2.RegisterRequest(
            device_id="old", model_fingerprint=model_fingerprint(tiny_model_dir)
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Register(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'pac'" in (refused.value.details() or "")
        request.capabilities.append("pac")
        welcome = stub.Register(request, timeout=10)
        assert welcome.method == "pac" and welcome.blocks == 3  # slots: the encoder's layers
        assert running.engine.registry.live_count() == 1  # the refusal registered nothing


def test_a_device_the_backbone_does_not_fit_fills_its_cache_through_a_pipeline(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """dev2's memory holds the embeddings and two layers, not the backbone: the coordinator
    plans a pipeline (dev2 runs the first units on its own samples, a helper the rest), dev2's
    cache fills from it, and dev2 then trains like the others."""
    caches = tmp_path / "activations"

    def flags(index: int) -> list[str]:
        own = ["--activation-cache", str(caches / f"dev{index}")]
        return own + (["--memory-limit", "4250000", "--cache-memory", "0"] if index == 2 else [])

    _, logs = pac_run(tiny_model_dir, tmp_path, 5, flags)

    owner_log = logs["dev2"]
    assert "does not fit" in owner_log
    assert re.search(r"pipeline \w+, units 0-\d \(owner\): 16 samples cached", owner_log), owner_log
    assert "micro-batches relayed" in logs["dev0"] + logs["dev1"]
    assert re.search(r"pipeline \w+ fills dev2's cache \(16 samples\)", logs["coordinator"])
    assert len(list((caches / "dev2").rglob("s*.safetensors"))) == 16  # its own samples only
    records = read_history(tmp_path / "history.json").rounds
    assert any("dev2" in {a.device for a in r.assignment} for r in records)  # then it trains
    assert all(r.blocks_updated for r in records if r.assignment)

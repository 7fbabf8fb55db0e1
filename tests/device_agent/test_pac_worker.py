"""The agent's PAC+ work: a report whose slots all carry the device's own cost, cold then warm;
a gradient of every side-network tensor; the activation cache filled, shown in the metrics,
kept on disk across a restart, and the backbone released once it is complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lola_deft.device_agent.channel import EmulatedChannel
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.pac_worker import SideNetworkWorker
from lola_deft.device_agent.settings import AgentConfig
from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters
from lola_deft.protos.deft.v1 import coordinator_pb2

SAMPLES = 24  # 8 per shard: one mini-batch of 8 sees them all


@pytest.fixture
def task(tmp_path: Path) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    lines = (EMBEDDED_TASK_DIR / "train.tsv").read_text().splitlines()
    (folder / "train.tsv").write_text("\n".join(lines[: SAMPLES + 1]) + "\n")
    return folder


def setup(slots: int = 4) -> coordinator_pb2.RegisterResponse:
    return coordinator_pb2.RegisterResponse(
        session="s", blocks=slots, task="sst2", num_labels=2, batch_size=8, max_seq_length=16,
        method="pac",
    )  # fmt: skip


def worker(model: Path, task: Path, cache: Path, **overrides: object) -> SideNetworkWorker:
    config = AgentConfig(
        coordinator="127.0.0.1:1",
        device_id="dev0",
        model_dir=model,
        data_dir=task,
        shard=0,
        num_shards=3,
        activation_cache=cache,
        cache_memory_bytes=0,  # every state on disk
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    channel = EmulatedChannel(config.transmit_snr_db, config.path_loss, 0, config.device_id)
    return SideNetworkWorker(config, AgentMetrics("dev0"), torch.device("cpu"), channel)


def instruction(iterations: int = 1) -> coordinator_pb2.RoundInstruction:
    return coordinator_pb2.RoundInstruction(round=1, block=2, local_iterations=iterations)


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"device": "dev0", **labels})
    assert value is not None, name
    return value


def test_a_cold_device_reports_the_backbone_and_a_warm_one_the_side_network_alone(
    tiny_model_dir: Path, task: Path, tmp_path: Path
) -> None:
    agent = worker(tiny_model_dir, task, tmp_path / "cache")
    agent.prepare(setup())
    # The profile put its first batch (the whole 8-sample shard) into the cache: already warm.
    assert agent.states is not None and agent.states.complete()
    assert agent.states.backbone is None  # released: nothing needs it
    warm = agent.report("s", 1)
    assert len(warm.block_costs) == 4  # one per slot, all the same: the device's own
    assert len({(c.seconds_per_iteration, c.peak_memory_bytes) for c in warm.block_costs}) == 1
    # A cold cache (states dropped) reports the backbone on top, and slower steps.
    agent.states.cache._disk.clear()
    agent.states.cache.stats.disk_samples = 0
    cold = agent.report("s", 1)
    assert cold.block_costs[0].peak_memory_bytes > warm.block_costs[0].peak_memory_bytes
    assert agent.backbone_bytes > 0
    assert cold.block_costs[0].seconds_per_iteration >= warm.block_costs[0].seconds_per_iteration


def test_training_uploads_every_tensor_and_counts_the_cache(
    tiny_model_dir: Path, task: Path, tmp_path: Path
) -> None:
    agent = worker(tiny_model_dir, task, tmp_path / "cache")
    agent.prepare(setup())
    assert agent.adapters is not None
    weights = {k: v.numpy() for k, v in agent.adapters.trainable_state().items()}
    trained = agent.train(instruction(iterations=2), weights)
    assert set(trained.gradients) == set(weights)
    for name, gradient in trained.gradients.items():
        assert gradient.shape == weights[name].shape and np.isfinite(gradient).all()
    assert any(np.abs(g).sum() > 0 for g in trained.gradients.values())
    assert trained.block == 2 and trained.iterations == 2
    metrics = agent.metrics
    assert sample(metrics, "deft_agent_cache_hits_total") >= 16  # 2 batches, from the cache
    assert sample(metrics, "deft_agent_cache_misses_total") == 8  # the first pass only
    assert sample(metrics, "deft_agent_cache_samples", where="disk") == 8
    assert sample(metrics, "deft_agent_cache_bytes", where="disk") > 0
    assert sample(metrics, "deft_agent_cache_fraction") == 1.0
    agent.uploaded(trained, 100, 0.1)
    assert agent.factor > 0 and len(agent.ratios) == 1


def test_the_cache_survives_a_restart_and_a_changed_setup_does_not_reuse_it(
    tiny_model_dir: Path, task: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = worker(tiny_model_dir, task, cache)
    first.prepare(setup())
    again = worker(tiny_model_dir, task, cache)
    again.prepare(setup())
    assert again.states is not None
    assert again.states.cache.stats.disk_samples == 8 and again.states.cache.stats.misses == 0
    other = worker(tiny_model_dir, task, cache, shard=1)  # another shard: its own folder
    other.prepare(setup())
    assert other.states is not None and other.states.cache.stats.misses == 8
    assert len([path for path in cache.iterdir() if path.is_dir()]) == 2


def test_a_sample_the_cache_lost_brings_the_backbone_back(
    tiny_model_dir: Path, task: Path, tmp_path: Path
) -> None:
    agent = worker(tiny_model_dir, task, tmp_path / "cache")
    agent.prepare(setup())
    assert agent.states is not None and agent.states.backbone is None
    for path in agent.states.cache.folder.glob("s*.safetensors"):  # type: ignore[union-attr]
        path.write_bytes(b"damaged")
    assert agent.adapters is not None
    weights = {k: v.numpy() for k, v in agent.adapters.trainable_state().items()}
    trained = agent.train(instruction(), weights)
    assert np.isfinite(trained.loss)
    assert agent.states.complete()  # recomputed and cached again; the backbone released again
    assert agent.states.backbone is None


def test_its_gradient_is_the_side_network_gradient(tiny_model_dir: Path, task: Path) -> None:
    """Parameter names and shapes are those of the coordinator's ParallelAdapters."""
    agent = worker(tiny_model_dir, task, task / "cache")
    agent.prepare(setup())
    assert agent.adapters is not None
    shape = agent.adapters.shape
    reference = ParallelAdapters(AdapterShape(shape.hidden_size, shape.num_layers, 2))
    expected = {name: tuple(p.shape) for name, p in reference.named_parameters()}
    trained = agent.train(instruction(), {k: v.numpy() for k, v in reference.state_dict().items()})
    assert {name: g.shape for name, g in trained.gradients.items()} == expected


def test_an_edited_training_file_does_not_meet_the_old_states(
    tiny_model_dir: Path, task: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    worker(tiny_model_dir, task, cache).prepare(setup())
    lines = (task / "train.tsv").read_text().splitlines()
    edited_lines = [lines[0], *(f"truly {line}" for line in lines[1:])]  # other words
    (task / "train.tsv").write_text("\n".join(edited_lines) + "\n")
    edited = worker(tiny_model_dir, task, cache)
    edited.prepare(setup())
    assert edited.states is not None and edited.states.cache.stats.misses == 8
    assert len([path for path in cache.iterdir() if path.is_dir()]) == 2

"""The reported per-block compute learns from measured rounds (live_profile) and the worker
reports it, with memory that counts the model's weights once."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lola_deft.device_agent.live_profile import LiveProfile, non_decreasing
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.profiler import load_or_measure, profiling_lock
from lola_deft.device_agent.settings import AgentConfig
from lola_deft.device_agent.worker import BlockWorker, available_memory
from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import EMBEDDED_TASK_DIR, read_split, task_spec
from lola_deft.ml.model import load_model
from lola_deft.protos.deft.v1 import coordinator_pb2


def brute_force_non_decreasing(values: list[float]) -> float:
    """The least squared distance from `values` to a non-decreasing sequence, on a grid of
    the values themselves (an isotonic fit takes block means, which lie in that hull)."""
    grid = sorted(
        {
            round(float(np.mean(values[i:j])), 9)
            for i in range(len(values))
            for j in range(i + 1, len(values) + 1)
        }
    )
    best = np.inf
    for candidate in itertools.combinations_with_replacement(grid, len(values)):
        best = min(best, float(np.sum((np.array(candidate) - values) ** 2)))
    return best


@pytest.mark.parametrize(
    "values",
    [[5.07, 7.25, 7.90, 4.47, 4.57, 5.97], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 1.0, 2.0, 1.0]],
)
def test_the_profile_is_repaired_to_the_nearest_non_decreasing_one(values: list[float]) -> None:
    fitted = non_decreasing(values)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(fitted))
    distance = float(np.sum((np.array(fitted) - values) ** 2))
    assert distance == pytest.approx(brute_force_non_decreasing(values), abs=1e-9)
    assert sum(fitted) == pytest.approx(sum(values))  # pooling keeps the total


def test_measured_blocks_replace_the_start_up_cost_and_the_rest_follow_in_depth() -> None:
    live = LiveProfile([1.0, 2.0, 3.0, 4.0])
    assert live.seconds() == [1.0, 2.0, 3.0, 4.0] and live.factor == 1.0
    live.record(2, 6.0)  # block 2 runs 3x slower than profiled (contention, a governor)
    assert live.factor == 3.0
    assert live.seconds() == pytest.approx([3.0, 6.0, 9.0, 12.0])
    live.record(4, 8.0)  # block 4 only 2x: the two observed ratios' median fills the rest
    assert live.seconds() == pytest.approx([2.5, 6.0, 7.5, 8.0])


def test_one_outlier_does_not_move_the_estimate_and_a_lasting_change_does() -> None:
    live = LiveProfile([1.0, 2.0])
    for value in (2.0, 2.0, 50.0):  # one round stalled (page cache, a phone call)
        live.record(2, value)
    assert live.seconds()[1] == 2.0
    for _ in range(2):  # the device became slower for good: the window follows within rounds
        live.record(2, 4.0)
    assert live.seconds()[1] == 4.0


def test_impossible_observations_are_ignored() -> None:
    live = LiveProfile([1.0, 2.0])
    for block, value in ((0, 1.0), (3, 1.0), (1, 0.0), (1, float("nan")), (1, -2.0)):
        live.record(block, value)
    assert live.seconds() == [1.0, 2.0]
    with pytest.raises(ValueError, match="positive"):
        LiveProfile([0.0, 1.0])


def test_the_worker_reports_what_its_rounds_measured(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = AgentConfig(
        coordinator="unused:1",
        device_id="dev0",
        model_dir=tiny_model_dir,
        data_dir=EMBEDDED_TASK_DIR,
        profile_cache=tmp_path,
        memory_limit_bytes=None,
    )
    worker = BlockWorker(config, AgentMetrics("dev0"))
    setup = coordinator_pb2.RegisterResponse(
        task="sst2",
        num_labels=2,
        batch_size=4,
        max_seq_length=16,
        lora_rank=2,
        lora_alpha=4,
        lora_target_modules=["query", "value"],
    )
    worker.prepare(setup)
    assert worker.profile is not None and worker.loaded is not None
    start_up = non_decreasing(worker.profile.seconds_per_iteration)
    first = worker.report("s", 1)
    assert [c.seconds_per_iteration for c in first.block_costs] == pytest.approx(start_up)
    assert first.compute_factor == 1.0
    instruction = coordinator_pb2.RoundInstruction(round=1, block=2, local_iterations=2)
    weights = {name: value.numpy() for name, value in worker.loaded.trainable_state().items()}
    trained = worker.train(instruction, weights)
    measured = trained.compute_s / 2
    worker.uploaded(trained, 1000, 0.1)
    second = worker.report("s", 2)
    assert second.block_costs[1].seconds_per_iteration == pytest.approx(measured)
    assert second.compute_factor == pytest.approx(measured / start_up[1])
    gauge = worker.metrics.block_seconds.labels("dev0", "2")._value.get()
    assert gauge == pytest.approx(measured)
    # The profiled peaks include the weights; available memory adds them back once.
    assert worker.weight_bytes > 0
    assert second.available_memory_bytes > available_memory(torch.device("cpu"), None)


def test_memory_counts_the_loaded_weights_once() -> None:
    cpu = torch.device("cpu")
    assert available_memory(cpu, 500.0, resident=100.0) == 500.0  # the cap is the whole device
    free = available_memory(cpu, None)
    assert available_memory(cpu, None, resident=2**30) == pytest.approx(free + 2**30, rel=0.01)


def test_agents_on_one_machine_profile_one_at_a_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(tiny_model_dir, 2)
    data = encode(loaded.tokenizer, read_split(EMBEDDED_TASK_DIR, task_spec("sst2"), "dev"), 16)
    batch = BatchSampler(data, 4).next_batch()
    identity = {"model": "tiny", "batch": 4}
    results: list[bool] = []
    with profiling_lock(tmp_path):  # another agent is profiling
        waiting = threading.Thread(
            target=lambda: results.append(
                load_or_measure(loaded, batch, torch.device("cpu"), identity, cache_dir=tmp_path)[1]
            )
        )
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not results  # it waits for the lock, not profiling alongside
        # The other agent finishes and caches its profile ...
        load_or_measure(loaded, batch, torch.device("cpu"), identity, cache_dir=tmp_path / "x")
        for made in (tmp_path / "x").glob("*.json"):
            made.replace(tmp_path / made.name)
    waiting.join()
    assert results == [True]  # ... which the waiting agent takes instead of measuring again


def test_a_stuck_holder_of_the_profiling_lock_is_waited_for_only_so_long(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel frees the lock of a killed agent; one that is alive but stuck would hold it
    forever, so the next agent waits at most its bound, then profiles and says why."""
    entered = threading.Event()
    with profiling_lock(tmp_path):
        waiting = threading.Thread(target=lambda: _enter(tmp_path, entered))
        waiting.start()
        waiting.join(timeout=30)
    assert entered.is_set()
    assert "profiling anyway" in caplog.text


def _enter(folder: Path, entered: threading.Event) -> None:
    with profiling_lock(folder, wait_s=0.3):
        entered.set()

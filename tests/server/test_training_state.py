"""Server-side Adam per block, and checkpoints that restore exactly and load in peft."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from lola_deft.ml.model import HEAD, load_model
from lola_deft.server.training_state import CheckpointError, TrainingState, read_checkpoint


def make_state(model_dir: Path) -> TrainingState:
    return TrainingState(load_model(model_dir, num_labels=2, seed=3), learning_rate=1e-2)


def fake_gradients(state: TrainingState, blocks: list[int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [n for b in blocks for n in state.loaded.blocks[b]] + state.loaded.blocks[HEAD]
    return {n: rng.normal(size=state.params[n].shape).astype(np.float32) for n in names}


def test_only_blocks_with_gradients_move(tiny_model_dir: Path) -> None:
    state = make_state(tiny_model_dir)
    before = state.snapshot()
    state.apply(fake_gradients(state, [2], seed=0))
    after = state.snapshot()
    moved = {n for n in before if not np.array_equal(before[n], after[n])}
    assert moved == set(state.loaded.blocks[2]) | set(state.loaded.blocks[HEAD])
    with pytest.raises(KeyError, match="unknown tensors"):
        state.apply({"nope": np.zeros(1)})


def test_checkpoint_restores_identical_state_and_loads_in_peft(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = make_state(tiny_model_dir)
    state.apply(fake_gradients(state, [1, 3], seed=1))
    state.round = 1
    state.history.append({"round": 1})
    target = state.save(tmp_path)
    assert (tmp_path / "LATEST").read_text().strip() == target.name

    restored = make_state(tiny_model_dir)
    restored.load(tmp_path)
    assert restored.round == 1 and restored.history == [{"round": 1}]
    for name, value in state.snapshot().items():
        assert np.array_equal(restored.snapshot()[name], value), name
    # Same next update from the same gradients: the Adam moments came back too.
    gradients = fake_gradients(state, [1, 2, 3], seed=2)
    state.apply(gradients)
    restored.apply(gradients)
    for name, value in state.snapshot().items():
        assert np.array_equal(restored.snapshot()[name], value), name

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
    peft_model = PeftModel.from_pretrained(base, str(target / "adapter"))
    saved = read_checkpoint(target)["trainable"]
    loaded_params = dict(peft_model.named_parameters())
    for name, value in saved.items():
        assert torch.equal(loaded_params[name], value), name


def test_checkpoints_keep_the_last_two_and_resume_needs_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = make_state(tiny_model_dir)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        state.load(tmp_path)
    for number in range(1, 5):
        state.round = number
        state.save(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("round-*")) == ["round-000003", "round-000004"]
    assert not list(tmp_path.glob(".tmp-*"))


class Payload:
    """What a planted checkpoint would run on an unsafe torch.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_a_planted_checkpoint_runs_no_code(tiny_model_dir: Path, tmp_path: Path) -> None:
    state = make_state(tiny_model_dir)
    state.round = 1
    target = state.save(tmp_path / "ck")
    marker = tmp_path / "pwned"
    # An earlier version's format (state.pt, a pickle), planted with a payload.
    (target / "state.safetensors").unlink()
    torch.save({"round": 1, "evil": Payload(marker)}, target / "state.pt")
    with pytest.raises(CheckpointError, match=r"refused: state\.pt holds more than tensors"):
        make_state(tiny_model_dir).load(tmp_path / "ck")
    assert not marker.exists()


def test_half_written_checkpoints_of_dead_processes_are_removed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    dead = tmp_path / ".tmp-round-000003-999999999"  # no such process
    alive = tmp_path / f".tmp-round-000003-{os.getppid()}"  # a running process's write
    for folder in (dead, alive):
        (folder / "adapter").mkdir(parents=True)
    state = make_state(tiny_model_dir)
    state.round = 3
    state.save(tmp_path)
    assert not dead.exists() and alive.exists()
    assert (tmp_path / "round-000003" / "state.safetensors").is_file()


def test_a_step_that_would_poison_the_model_is_undone(tiny_model_dir: Path, tmp_path: Path) -> None:
    from lola_deft.server.errors import NonFiniteStep

    state = make_state(tiny_model_dir)
    state.apply(fake_gradients(state, [1], seed=0))
    before = state.snapshot()
    moments = {k: v["exp_avg_sq"].clone() for k, v in state.optimizer.state_dict()["state"].items()}
    huge = {
        name: np.full_like(value, 3e38) for name, value in fake_gradients(state, [2], 1).items()
    }
    with pytest.raises(NonFiniteStep, match="non-finite"):
        state.apply(huge)  # finite input; Adam's second moment overflows to inf
    after = state.snapshot()
    assert all(np.array_equal(before[name], after[name]) for name in before)
    restored = state.optimizer.state_dict()["state"]
    assert set(restored) == set(moments)
    assert all(torch.equal(restored[k]["exp_avg_sq"], moments[k]) for k in moments)
    state.apply(fake_gradients(state, [2], seed=2))  # honest uploads still train
    assert not state.non_finite()
    state.save(tmp_path)


def test_a_poisoned_checkpoint_is_refused_on_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    state = make_state(tiny_model_dir)
    target = state.save(tmp_path)
    tensors = load_file(str(target / "state.safetensors"))
    first = next(name for name in tensors if name.startswith("param/"))
    tensors[first][...] = float("nan")
    save_file(tensors, str(target / "state.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite"):
        make_state(tiny_model_dir).load(tmp_path)


def test_a_checkpoint_of_the_previous_format_still_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import random

    state = make_state(tiny_model_dir)
    state.apply(fake_gradients(state, [1], seed=4))
    state.round = 2
    target = state.save(tmp_path)
    stored = read_checkpoint(target)
    name, keys, position, has_gauss, cached = np.random.get_state()
    legacy = {
        "round": 2,
        "trainable": stored["trainable"],
        "optimizer": stored["optimizer"],
        "rng": {
            "torch": stored["rng"]["torch"],
            "python": random.getstate(),
            "numpy": (str(name), [int(k) for k in keys], int(position), int(has_gauss), cached),
        },
        "history": [{"round": 1}],
        "baseline": None,
        "extra": {},
    }
    for written in ("state.safetensors", "state.json", "history.json"):
        (target / written).unlink()
    torch.save(legacy, target / "state.pt")
    restored = make_state(tiny_model_dir)
    restored.load(tmp_path)
    assert restored.round == 2 and restored.history == [{"round": 1}]
    before, after = state.snapshot(), restored.snapshot()
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_the_side_network_checkpoints_and_resumes_like_lora(tmp_path: Path) -> None:
    """PAC+: Adam's state, the round and the parameters come back exactly; the adapter folder
    is the export; a LoRA checkpoint is refused."""
    from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters, load_adapters
    from lola_deft.server.training_state import CheckpointError, SideNetworkState, adapter_digest

    shape = AdapterShape(hidden_size=16, num_layers=2, num_labels=2)
    torch.manual_seed(0)
    state = SideNetworkState(ParallelAdapters(shape), 1e-3)
    rng = np.random.default_rng(0)
    for _ in range(2):
        state.apply(
            {n: rng.normal(size=p.shape).astype(np.float32) for n, p in state.params.items()}
        )
    state.round = 2
    folder = tmp_path / "ck"
    saved = state.save(folder)
    exported = load_adapters(saved / "adapter")
    assert adapter_digest({k: v.numpy() for k, v in exported.state_dict().items()}) == (
        adapter_digest(state.snapshot())
    )
    torch.manual_seed(1)
    resumed = SideNetworkState(ParallelAdapters(shape), 1e-3)
    resumed.load(folder)
    assert resumed.round == 2 and adapter_digest(resumed.snapshot()) == adapter_digest(
        state.snapshot()
    )
    step = {n: np.ones(p.shape, np.float32) for n, p in state.params.items()}
    state.apply(step)
    resumed.apply(step)  # the same Adam moments: the same next step
    assert adapter_digest(resumed.snapshot()) == adapter_digest(state.snapshot())
    other = SideNetworkState(ParallelAdapters(AdapterShape(16, 3, 2)), 1e-3)
    with pytest.raises(CheckpointError, match="different model"):
        other.load(folder)

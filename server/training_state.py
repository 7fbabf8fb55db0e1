"""The coordinator's copy of the adapters, Adam held on the server, and atomic checkpoints.

Each round only the blocks whose gradients arrived are updated (the paper's eq. 6): the others
keep grad None, which torch's Adam skips, so their moment estimates do not decay either.
Checkpoints are written to a temporary directory and renamed into place, then LATEST is
replaced atomically, so a coordinator killed at any instant leaves a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lola_deft.ml.model import LoadedModel, save_adapter

LATEST = "LATEST"
KEEP = 2


class CheckpointError(RuntimeError):
    pass


def adapter_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over names and bytes: lets users (and tests) compare adapter states exactly."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


class TrainingState:
    def __init__(self, loaded: LoadedModel, learning_rate: float) -> None:
        self.loaded = loaded
        self.params = {
            name: p
            for name, p in loaded.model.named_parameters()
            if name in set(loaded.trainable_names())
        }
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=learning_rate)
        self.round = 0  # rounds completed
        self.history: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] | None = None  # evaluation before the first round

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().numpy().copy() for name, p in self.params.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self.params.items()}

    def apply(self, gradients: dict[str, np.ndarray]) -> None:
        unknown = set(gradients) - set(self.params)
        if unknown:
            raise KeyError(f"gradients for unknown tensors: {sorted(unknown)[:3]}")
        for name, parameter in self.params.items():
            value = gradients.get(name)
            parameter.grad = None if value is None else torch.as_tensor(value).to(parameter)
        self.optimizer.step()
        for parameter in self.params.values():
            parameter.grad = None

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, directory: Path, extra: dict[str, Any] | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"round-{self.round:06d}"
        temporary = directory / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        save_adapter(self.loaded.model, temporary / "adapter")
        torch.save(
            {
                "round": self.round,
                "trainable": {k: v.detach().cpu().clone() for k, v in self.params.items()},
                "optimizer": self.optimizer.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "python": random.getstate(),
                    "numpy": np.random.get_state(),
                },
                "history": self.history,
                "baseline": self.baseline,
                "extra": extra or {},
            },
            temporary / "state.pt",
        )
        _fsync_tree(temporary)
        target = directory / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
        pointer = directory / f".{LATEST}.tmp"
        pointer.write_text(name + "\n")
        os.replace(pointer, directory / LATEST)
        for old in sorted(directory.glob("round-*"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, directory: Path) -> Path:
        """Restore adapters, optimizer, round, RNG and history from the latest checkpoint."""
        pointer = directory / LATEST
        if not pointer.is_file():
            raise CheckpointError(f"{directory}: no checkpoint to resume from (no {LATEST})")
        target = directory / pointer.read_text().strip()
        try:
            stored = torch.load(target / "state.pt", weights_only=False)
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"{target}: unreadable checkpoint: {error}") from error
        if set(stored["trainable"]) != set(self.params):
            raise CheckpointError(f"{target}: checkpoint is for a different model or LoRA setup")
        with torch.no_grad():
            for name, value in stored["trainable"].items():
                self.params[name].copy_(value)
        self.optimizer.load_state_dict(stored["optimizer"])
        torch.set_rng_state(stored["rng"]["torch"])
        random.setstate(stored["rng"]["python"])
        np.random.set_state(stored["rng"]["numpy"])
        self.round = int(stored["round"])
        self.history = list(stored["history"])
        self.baseline = stored.get("baseline")
        return target


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())

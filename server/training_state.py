"""The coordinator's copy of the adapters, Adam held on the server, and atomic checkpoints.

Each round only the blocks whose gradients arrived are updated (the paper's eq. 6): the others
keep grad None, which torch's Adam skips, so their moment estimates do not decay either.
Checkpoints are written to a temporary directory and renamed into place, then LATEST is
replaced atomically, so a coordinator killed at any instant leaves a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lola_deft.ml.model import LoadedModel, save_adapter
from lola_deft.server.errors import NonFiniteStep

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
        """One Adam step. If it leaves any parameter (or Adam moment) non-finite, parameters
        and optimizer are restored as they were and NonFiniteStep names what broke: a poisoned
        step never reaches a checkpoint."""
        unknown = set(gradients) - set(self.params)
        if unknown:
            raise KeyError(f"gradients for unknown tensors: {sorted(unknown)[:3]}")
        # Only tensors with a gradient move (Adam skips the rest): back up just those.
        moving = {name: self.params[name] for name in gradients}
        before = {name: p.detach().clone() for name, p in moving.items()}
        moments = {
            name: {k: v.clone() for k, v in self.optimizer.state[p].items()}
            for name, p in moving.items()
            if p in self.optimizer.state
        }
        for name, parameter in self.params.items():
            value = gradients.get(name)
            parameter.grad = None if value is None else torch.as_tensor(value).to(parameter)
        self.optimizer.step()
        for parameter in self.params.values():
            parameter.grad = None
        broken = self.non_finite(moving)
        if broken:
            with torch.no_grad():
                for name, parameter in moving.items():
                    parameter.copy_(before[name])
                    if name in moments:
                        self.optimizer.state[parameter] = moments[name]
                    else:
                        self.optimizer.state.pop(parameter, None)
            raise NonFiniteStep(broken)

    def non_finite(self, params: dict[str, torch.nn.Parameter] | None = None) -> list[str]:
        """Parameters (all, or those given) that hold NaN or inf, or whose Adam moments do.
        One fused max-abs norm over every tensor: finite exactly when all its values are."""
        owners: list[str] = []
        tensors: list[torch.Tensor] = []
        for name, parameter in (params or self.params).items():
            moments = self.optimizer.state.get(parameter, {})
            for tensor in (parameter.detach(), *(v for v in moments.values() if v.dim() > 0)):
                owners.append(name)
                tensors.append(tensor)
        if not tensors:
            return []
        finite = torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf"))))
        if bool(finite.all()):
            return []
        return sorted({owners[i] for i in torch.nonzero(~finite).flatten().tolist()})

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, directory: Path, extra: dict[str, Any] | None = None) -> Path:
        broken = self.non_finite()
        if broken:  # apply() prevents this; a checkpoint must never carry a poisoned model
            raise CheckpointError(f"refusing to checkpoint non-finite parameters {broken[:3]}")
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory)
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
                    "numpy": _plain_numpy_state(),
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
            # Tensors and plain data only: a planted state.pt cannot run code when loaded.
            stored = torch.load(target / "state.pt", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{target}: refused: state.pt holds more than tensors and plain data "
                "(written by an older version, or not by LoLa-DEFT)"
            ) from error
        except (OSError, RuntimeError, EOFError) as error:
            raise CheckpointError(f"{target}: unreadable checkpoint: {error}") from error
        if set(stored["trainable"]) != set(self.params):
            raise CheckpointError(f"{target}: checkpoint is for a different model or LoRA setup")
        with torch.no_grad():
            for name, value in stored["trainable"].items():
                self.params[name].copy_(value)
        self.optimizer.load_state_dict(stored["optimizer"])
        broken = self.non_finite()
        if broken:
            raise CheckpointError(
                f"{target}: refused: non-finite parameters {broken[:3]} (a poisoned checkpoint)"
            )
        torch.set_rng_state(stored["rng"]["torch"])
        random.setstate(stored["rng"]["python"])
        name, keys, position, has_gauss, cached = stored["rng"]["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
        self.round = int(stored["round"])
        self.history = list(stored["history"])
        self.baseline = stored.get("baseline")
        return target


def _plain_numpy_state() -> tuple[str, list[int], int, int, float]:
    """numpy's global RNG state as plain Python values (loadable with weights_only=True)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return str(name), [int(k) for k in keys], int(position), int(has_gauss), float(cached)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the half-written `.tmp-round-*-PID` folders of processes that no longer run (a
    coordinator killed while writing); returns what was removed."""
    removed = []
    for temporary in directory.glob(".tmp-round-*"):
        pid = temporary.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _running(int(pid)):
            continue
        shutil.rmtree(temporary, ignore_errors=True)
        removed.append(temporary)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())

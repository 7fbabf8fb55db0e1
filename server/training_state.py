"""The coordinator's copy of the adapters, Adam held on the server, and atomic checkpoints.

Each round only the blocks whose gradients arrived are updated (the paper's eq. 6): the others
keep grad None, which torch's Adam skips, so their moment estimates do not decay either.
Checkpoints are written to a temporary directory and renamed into place, then LATEST is
replaced atomically, so a coordinator killed at any instant leaves a complete checkpoint.
A checkpoint is safetensors plus JSON (adapter/, state.safetensors, state.json, history.json):
reading one runs no code, and it is written in milliseconds however long the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from lola_deft.ml.model import LoadedModel, save_adapter
from lola_deft.ml.parallel_adapters import ParallelAdapters, save_adapters
from lola_deft.server.errors import NonFiniteStep

LATEST = "LATEST"
TENSORS = "state.safetensors"  # parameters, Adam moments, RNG words
STATE = "state.json"  # round, optimizer settings, RNG scalars, baseline
HISTORY = "history.json"
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
    """LoRA adapters and head (LoLa-DEFT); SideNetworkState holds PAC+'s parallel adapters."""

    def __init__(self, loaded: LoadedModel, learning_rate: float) -> None:
        self.loaded = loaded
        trainable = set(loaded.trainable_names())
        self._start(
            {name: p for name, p in loaded.model.named_parameters() if name in trainable},
            learning_rate,
        )

    def _start(self, params: dict[str, torch.nn.Parameter], learning_rate: float) -> None:
        self.params = params
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=learning_rate)
        self.round = 0  # rounds completed
        self.history: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] | None = None  # evaluation before the first round
        self.base_model: str | None = None  # the name saved adapters record as their base

    def export(self, folder: Path) -> None:
        """The trained adapter as users load it: a PEFT adapter folder."""
        save_adapter(self.loaded.model, folder, self.base_model)

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
    def save(
        self,
        directory: Path,
        extra: dict[str, Any] | None = None,
        publish: Callable[[Path], None] | None = None,
    ) -> Path:
        """Checkpoint atomically into directory/round-NNNNNN. `publish(adapter_folder)` adds
        what makes the adapter shareable (tokenizer, card) before the folder appears."""
        broken = self.non_finite()
        if broken:  # apply() prevents this; a checkpoint must never carry a poisoned model
            raise CheckpointError(f"refusing to checkpoint non-finite parameters {broken[:3]}")
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory)
        name = f"round-{self.round:06d}"
        temporary = directory / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        self.export(temporary / "adapter")
        if publish is not None:
            publish(temporary / "adapter")
        tensors, document = self._stored(extra)
        _save_tensors(tensors, temporary / TENSORS)
        (temporary / STATE).write_text(json.dumps(document))
        # The history grows every round: as its own JSON it costs microseconds a record.
        (temporary / HISTORY).write_text(json.dumps(self.history))
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

    def _stored(
        self, extra: dict[str, Any] | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The checkpoint as tensors (safetensors: no code runs when it is read) and JSON."""
        optimizer = self.optimizer.state_dict()
        python_version, python_words, python_gauss = random.getstate()
        numpy_name, numpy_keys, position, has_gauss, cached = np.random.get_state()
        tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in self.params.items()}
        for index, moments in optimizer["state"].items():
            for key, value in moments.items():
                tensors[f"adam/{index}/{key}"] = value.detach().cpu().contiguous()
        tensors["rng/torch"] = torch.get_rng_state()
        tensors["rng/python"] = torch.tensor(python_words, dtype=torch.int64)
        tensors["rng/numpy"] = torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64))
        document = {
            "format": 2,
            "round": self.round,
            "param_groups": optimizer["param_groups"],
            "rng": {
                "python_version": python_version,
                "python_gauss": python_gauss,
                "numpy_name": str(numpy_name),
                "numpy_position": int(position),
                "numpy_has_gauss": int(has_gauss),
                "numpy_cached": float(cached),
            },
            "baseline": self.baseline,
            "extra": extra or {},
        }
        return tensors, document

    def load(self, directory: Path) -> Path:
        """Restore adapters, optimizer, round, RNG and history from the latest checkpoint."""
        pointer = directory / LATEST
        if not pointer.is_file():
            raise CheckpointError(f"{directory}: no checkpoint to resume from (no {LATEST})")
        target = directory / pointer.read_text().strip()
        stored = read_checkpoint(target)
        if set(stored["trainable"]) != set(self.params):
            raise CheckpointError(f"{target}: checkpoint is for a different model or LoRA setup")
        with torch.no_grad():
            for name, value in stored["trainable"].items():
                self.params[name].copy_(value)
        try:
            self.optimizer.load_state_dict(stored["optimizer"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{target}: unusable optimizer state: {error}") from error
        broken = self.non_finite()
        if broken:
            raise CheckpointError(
                f"{target}: refused: non-finite parameters {broken[:3]} (a poisoned checkpoint)"
            )
        torch.set_rng_state(stored["rng"]["torch"])
        _set_python_rng_state(stored["rng"]["python"])
        _set_numpy_rng_state(stored["rng"]["numpy"])
        self.round = int(stored["round"])
        self.history = list(stored["history"])
        self.baseline = stored.get("baseline")
        return target


class SideNetworkState(TrainingState):
    """PAC+'s parallel adapters with the same Adam, rollback and atomic checkpoints; the
    checkpoint's adapter/ folder is their export (ml.parallel_adapters.load_adapters reads it)."""

    def __init__(self, adapters: ParallelAdapters, learning_rate: float) -> None:
        self.adapters = adapters
        self._start(dict(adapters.named_parameters()), learning_rate)

    def export(self, folder: Path) -> None:
        save_adapters(self.adapters, folder, self.base_model or "")


def read_checkpoint(target: Path) -> dict[str, Any]:
    """A checkpoint folder's contents: round, trainable tensors, optimizer state dict, RNG
    states, history, baseline. Reads safetensors and JSON (no code can run); a folder of an
    earlier version (state.pt) is read with torch.load(weights_only=True)."""
    if not (target / TENSORS).is_file() and (target / "state.pt").is_file():
        return _read_legacy(target)
    try:
        tensors = {k: torch.from_numpy(v) for k, v in load_numpy(str(target / TENSORS)).items()}
        document = json.loads((target / STATE).read_text())
        history = json.loads((target / HISTORY).read_text())
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"{target}: unreadable checkpoint: {error}") from error
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam/"):
            _, index, name = key.split("/", 2)
            moments.setdefault(int(index), {})[name] = value
    rng = document["rng"]
    return {
        "round": document["round"],
        "trainable": {k[len("param/") :]: v for k, v in tensors.items() if k.startswith("param/")},
        "optimizer": {"state": moments, "param_groups": document["param_groups"]},
        "rng": {
            "torch": tensors["rng/torch"],
            "python": {
                "version": rng["python_version"],
                "words": tensors["rng/python"],
                "gauss": rng["python_gauss"],
            },
            "numpy": {
                "name": rng["numpy_name"],
                "keys": tensors["rng/numpy"],
                "position": rng["numpy_position"],
                "has_gauss": rng["numpy_has_gauss"],
                "cached": rng["numpy_cached"],
            },
        },
        "history": history,
        "baseline": document.get("baseline"),
        "extra": document.get("extra", {}),
    }


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors through numpy (3x faster than its torch writer for hundreds of small
    tensors); the same file format either way."""
    try:
        arrays = {name: tensor.numpy() for name, tensor in tensors.items()}
    except TypeError:  # a dtype numpy lacks (bfloat16)
        save_file(tensors, str(path))
    else:
        save_numpy(arrays, str(path))


def _read_legacy(target: Path) -> dict[str, Any]:
    try:
        # Tensors and plain data only: a planted state.pt cannot run code when loaded.
        stored = dict(torch.load(target / "state.pt", weights_only=True))
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{target}: refused: state.pt holds more than tensors and plain data "
            "(not written by LoLa-DEFT)"
        ) from error
    except (OSError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"{target}: unreadable checkpoint: {error}") from error
    if (target / HISTORY).is_file():
        stored["history"] = json.loads((target / HISTORY).read_text())
    stored.setdefault("history", [])
    return stored


# RNG states come back as dicts of tensors and plain values (earlier versions: plain tuples).
def _set_python_rng_state(state: Any) -> None:
    if isinstance(state, dict):
        random.setstate((state["version"], tuple(state["words"].tolist()), state["gauss"]))
    else:  # an earlier version's plain tuple
        random.setstate(state)


def _set_numpy_rng_state(state: Any) -> None:
    if isinstance(state, dict):
        keys = state["keys"].numpy().astype(np.uint32)
        values = (state["name"], keys, state["position"], state["has_gauss"], state["cached"])
    else:  # an earlier version's plain tuple
        name, words, position, has_gauss, cached = state
        values = (name, np.asarray(words, dtype=np.uint32), position, has_gauss, cached)
    np.random.set_state(values)


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

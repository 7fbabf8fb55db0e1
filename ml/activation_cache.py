"""PAC+'s activation cache: a frozen backbone's hidden states per sample, computed once.

The backbone never changes and the parallel adapters sit beside it, so a sample's states are
the same every epoch: after the first, a training step runs the adapters alone. States are kept
trimmed to the sample's real tokens, as float32, float16 or int8 (one scale per token and layer,
absmax / 127), in memory up to one budget and on disk up to another; a sample that fits in
neither is a miss, recomputed each time it is needed (counted, and said once in the log).

The disk copy survives a restart. It lives in a folder named by the digest of everything that
shapes the states (model fingerprint, task, shard, max length, storage), so any change of those
reads a different folder instead of stale states. Each sample is one safetensors file written to
a temporary name and renamed, so a killed process leaves whole files or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("deft.cache")

STORAGES = ("float32", "float16", "int8")
_SUFFIX = ".safetensors"


class CacheError(ValueError):
    """An activation cache that cannot be set up as asked (storage, folder)."""


@dataclass(frozen=True)
class CacheKey:
    """Everything that shapes the cached states; its digest names the disk folder."""

    model_fingerprint: str
    task: str
    shard: str
    max_length: int
    storage: str = "float16"

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise CacheError(f"cache storage {self.storage!r}: use one of {', '.join(STORAGES)}")

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    memory_samples: int = 0
    disk_samples: int = 0


def encode_states(states: np.ndarray, storage: str) -> dict[str, np.ndarray]:
    """One sample's states [layers + 1, tokens, hidden] as stored."""
    if storage == "float32":
        return {"states": np.ascontiguousarray(states, np.float32)}
    if storage == "float16":
        return {"states": np.ascontiguousarray(states, np.float16)}
    scale = np.abs(states).max(axis=-1, keepdims=True).astype(np.float32) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.clip(np.rint(states / scale), -127, 127).astype(np.int8)
    return {"states": quantized, "scale": scale.astype(np.float16)}


def decode_states(stored: dict[str, np.ndarray]) -> np.ndarray:
    states = stored["states"]
    if states.dtype == np.int8:
        return states.astype(np.float32) * stored["scale"].astype(np.float32)
    return states.astype(np.float32)


def stored_bytes(stored: dict[str, np.ndarray]) -> int:
    return sum(value.nbytes for value in stored.values())


@dataclass
class ActivationCache:
    key: CacheKey
    root: Path | None  # None: memory only
    memory_budget_bytes: int
    disk_budget_bytes: int
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self._memory: dict[int, dict[str, np.ndarray]] = {}
        self._disk: dict[int, Path] = {}
        self._warned = False
        self.folder = None if self.root is None else self.root / self.key.digest()
        if self.folder is not None:
            self._open_folder(self.folder)

    def _open_folder(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            manifest = folder / "key.json"
            if not manifest.exists():
                manifest.write_text(json.dumps(asdict(self.key), indent=2) + "\n")
            for leftover in folder.glob("*.tmp"):  # a process killed mid-write
                leftover.unlink()
            for path in sorted(folder.glob(f"s*{_SUFFIX}")):
                index = int(path.name[1 : -len(_SUFFIX)])
                self._disk[index] = path
                self.stats.disk_bytes += path.stat().st_size
        except (OSError, ValueError) as error:
            raise CacheError(f"cannot use the activation cache folder {folder}: {error}") from error
        self.stats.disk_samples = len(self._disk)
        if self._disk:
            log.info("activation cache: %d samples on disk in %s", len(self._disk), folder)

    def __contains__(self, index: int) -> bool:
        return index in self._memory or index in self._disk

    def __len__(self) -> int:
        """Samples cached now (a sample lives in memory or on disk, never both)."""
        return len(self._memory) + len(self._disk)

    def get(self, index: int) -> np.ndarray | None:
        """The sample's states as float32, or None (a miss)."""
        stored = self._memory.get(index)
        if stored is None and index in self._disk:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            try:
                stored = load_file(str(self._disk[index]))
            except (OSError, ValueError, SafetensorError) as error:  # damaged on disk: recompute it
                log.warning("activation cache: dropped %s: %s", self._disk[index], error)
                self._disk.pop(index).unlink(missing_ok=True)
                stored = None
        if stored is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return decode_states(stored)

    def put(self, index: int, states: np.ndarray) -> bool:
        """Keep a sample's states where the budgets allow; False when neither has room."""
        if index in self:
            return True
        stored = encode_states(states, self.key.storage)
        size = stored_bytes(stored)
        if self.stats.memory_bytes + size <= self.memory_budget_bytes:
            self._memory[index] = stored
            self.stats.memory_bytes += size
            self.stats.memory_samples += 1
            return True
        if self.folder is not None and self.stats.disk_bytes + size <= self.disk_budget_bytes:
            try:
                self._write(index, stored)
                return True
            except OSError as error:  # a full or failing disk: a miss, never a crash
                log.warning("activation cache: cannot write to %s: %s", self.folder, error)
                self.disk_budget_bytes = self.stats.disk_bytes
        if not self._warned:
            log.warning(
                "activation cache full (memory %d MiB, disk %d MiB): samples beyond it are "
                "recomputed through the backbone every epoch; raise the budgets or store int8",
                self.memory_budget_bytes >> 20,
                self.disk_budget_bytes >> 20,
            )
            self._warned = True
        return False

    def _write(self, index: int, stored: dict[str, np.ndarray]) -> None:
        from safetensors.numpy import save_file

        assert self.folder is not None
        path = self.folder / f"s{index:08d}{_SUFFIX}"
        temporary = path.with_suffix(".tmp")
        try:
            save_file(stored, str(temporary))
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        self._disk[index] = path
        self.stats.disk_bytes += path.stat().st_size
        self.stats.disk_samples += 1


def pad_batch(samples: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples [layers + 1, tokens_i, hidden] as one zero-padded batch and its token mask."""
    longest = max(sample.shape[1] for sample in samples)
    layers, hidden = samples[0].shape[0], samples[0].shape[2]
    states = torch.zeros(len(samples), layers, longest, hidden)
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for row, sample in enumerate(samples):
        tokens = sample.shape[1]
        states[row, :, :tokens] = torch.from_numpy(sample)
        mask[row, :tokens] = True
    return states, mask

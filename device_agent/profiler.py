"""Start-up profile of this device: seconds per local iteration and peak memory per block depth.

Reported to the coordinator every round, so the scheduler works with this hardware's own costs
(the JSON instance's per-device `block_seconds`). Cached on disk per model, batch shape, LoRA
setup and hardware, since profiling a large model takes a while. Agents on one machine profile
one at a time (a lock file in the cache folder): profiles taken side by side on shared cores
measure the contention, not the device, and the agents after the first find the profile cached.
The profile is where the estimate starts; live_profile corrects it from every round.

Memory: on CUDA the allocator's peak during the iteration; on CPU an estimate that counts what
the iteration must hold at once: model weights, the tensors saved for backward (counted with
torch.autograd.graph.saved_tensors_hooks) and the gradients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lola_deft.ml.model import LoadedModel
from lola_deft.ml.training import block_gradient


@dataclass
class BlockProfile:
    seconds_per_iteration: list[float]  # index 0 is block 1
    peak_memory_bytes: list[float]
    hardware: str


log = logging.getLogger("deft.agent")


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}x{os.cpu_count()}"


def default_cache_dir(kind: str = "profiles") -> Path:
    """The agent's cache folder for `kind` (profiles, activations): $LOLA_DEFT_CACHE/kind, else
    ~/.cache/lola-deft/kind."""
    root = os.environ.get("LOLA_DEFT_CACHE") or os.path.join(Path.home(), ".cache", "lola-deft")
    return Path(root) / kind


def cache_key(identity: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def saved_tensor_bytes(
    loaded: LoadedModel, block: int | None, batch: Mapping[str, torch.Tensor]
) -> int:
    """Bytes autograd saves for backward in one iteration on `block` (None: every block)."""
    return saved_bytes(lambda: block_gradient(loaded, block, [batch]))


def saved_bytes(step: Callable[[], object]) -> int:
    """Bytes autograd saves for backward while `step` runs (its activation memory)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return total


def measure(
    loaded: LoadedModel,
    batch: Mapping[str, torch.Tensor],
    device: torch.device,
    *,
    repeats: int = 2,
    slowdown: float = 1.0,
) -> BlockProfile:
    weights = loaded.weight_bytes()
    seconds, memory = [], []
    for block in range(1, loaded.num_blocks + 1):
        block_gradient(loaded, block, [batch], device=device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        result = block_gradient(loaded, block, [batch] * repeats, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            memory.append(float(torch.cuda.max_memory_allocated(device)))
        else:
            gradients = sum(g.numel() * g.element_size() for g in result.gradients.values())
            memory.append(float(weights + saved_tensor_bytes(loaded, block, batch) + gradients))
        seconds.append(slowdown * (time.perf_counter() - started) / repeats)
    return BlockProfile(seconds, memory, hardware_name(device))


PROFILING_WAIT_S = 600.0  # longer than any profile: a holder past it is stuck, not busy


@contextlib.contextmanager
def profiling_lock(folder: Path, wait_s: float = PROFILING_WAIT_S) -> Iterator[None]:
    """Held while an agent profiles: one profile at a time per machine (per cache folder).
    Advisory (flock), released by the kernel if the holder is killed; no lock where the
    platform has no fcntl. A holder that is alive but stuck is waited for `wait_s` at most:
    then this agent profiles anyway (its numbers may carry the contention), and says so."""
    try:
        import fcntl
    except ImportError:  # Windows laptops: profiles may overlap there
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".profiling.lock").open("a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning(
                        "another agent has held the profiling lock in %s for over %.0f s; "
                        "profiling anyway (times may include its contention)",
                        folder,
                        wait_s,
                    )
                    held = False
                    break
                time.sleep(0.2)
        try:
            yield
        finally:
            if held:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_cached(path: Path, blocks: int) -> BlockProfile | None:
    try:
        stored = json.loads(path.read_text())
        profile = BlockProfile(**stored["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return profile if len(profile.seconds_per_iteration) == blocks else None


def load_or_measure(
    loaded: LoadedModel,
    batch: Mapping[str, torch.Tensor],
    device: torch.device,
    identity: Mapping[str, object],
    *,
    cache_dir: Path | None = None,
    slowdown: float = 1.0,
) -> tuple[BlockProfile, bool]:
    """The cached profile for this identity and hardware, or a fresh measurement (then cached).

    Returns (profile, came_from_cache). The slowdown is applied after caching, so one cache
    serves every emulated speed.
    """
    full_identity = {**identity, "hardware": hardware_name(device), "torch": torch.__version__}
    folder = cache_dir or default_cache_dir()
    path = folder / f"{cache_key(full_identity)}.json"
    profile = _read_cached(path, loaded.num_blocks)
    cached = profile is not None
    if profile is None:
        with profiling_lock(folder):
            profile = _read_cached(path, loaded.num_blocks)  # another agent's, made meanwhile
            cached = profile is not None
            if profile is None:
                profile = measure(loaded, batch, device)
                temporary = path.with_suffix(f".{os.getpid()}.tmp")
                temporary.write_text(
                    json.dumps({"identity": full_identity, "profile": asdict(profile)})
                )
                temporary.replace(path)
    scaled = [s * slowdown for s in profile.seconds_per_iteration]
    return BlockProfile(scaled, profile.peak_memory_bytes, profile.hardware), cached

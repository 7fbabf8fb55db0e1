"""A PAC+ training step: the parallel adapters' gradient over cached backbone states.

The backbone runs only to fill the activation cache (the first epoch, or a sample the cache had
no room for); every other step is the side network's forward and backward alone, which is why a
warm-cache step costs a small fraction of a LoRA step (`make bench`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from lola_deft.ml.activation_cache import ActivationCache, pad_batch
from lola_deft.ml.batching import EncodedSplit
from lola_deft.ml.parallel_adapters import ParallelAdapters

BACKBONE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def backbone_states(backbone: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Hidden states after every layer (0: the embeddings): [batch, layers + 1, tokens, hidden],
    on the CPU (where the cache keeps them), whatever device the backbone runs on."""
    device = next(backbone.parameters()).device
    inputs = {key: batch[key].to(device) for key in BACKBONE_INPUTS if key in batch}
    with torch.no_grad():
        output = backbone(**inputs, output_hidden_states=True)
    return torch.stack(output.hidden_states, dim=1).cpu()


class CachedStates:
    """Samples' backbone states by index: from the cache, else through the backbone (and into
    the cache where its budgets allow)."""

    def __init__(
        self,
        backbone: torch.nn.Module | None,
        data: EncodedSplit,
        cache: ActivationCache,
        batch_size: int = 32,
        loader: Callable[[], torch.nn.Module] | None = None,
    ) -> None:
        """`loader` brings the backbone back after `release_backbone` (a sample the cache lost
        or had no room for); without one, the backbone is never released."""
        self.backbone = backbone
        self.data = data
        self.cache = cache
        self.batch_size = batch_size
        self.loader = loader
        self.lengths = data.inputs["attention_mask"].sum(dim=1).tolist()

    def complete(self) -> bool:
        """Every sample's states are cached: training needs no backbone any more."""
        return self.cached_count() >= len(self.data)

    def cached_count(self) -> int:
        """Samples cached (the cache holds this split's indices only): constant time, as
        reports and metrics ask every round."""
        return len(self.cache)

    def cached_fraction(self) -> float:
        total = len(self.data)
        return self.cached_count() / total if total else 1.0

    def release_backbone(self) -> bool:
        """Drop the backbone once every sample is cached (and a loader can bring it back);
        returns whether the backbone is gone now."""
        if self.backbone is not None and self.loader is not None and self.complete():
            self.backbone = None
        return self.backbone is None

    def _backbone(self) -> torch.nn.Module:
        if self.backbone is None:
            if self.loader is None:
                raise RuntimeError("the backbone was released and cannot be loaded again")
            self.backbone = self.loader()
        return self.backbone

    def _compute(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        computed: dict[int, np.ndarray] = {}
        for start in range(0, len(indices), self.batch_size):
            chunk = list(indices[start : start + self.batch_size])
            states = backbone_states(self._backbone(), self.data.batch(np.asarray(chunk))).numpy()
            for row, index in enumerate(chunk):
                computed[index] = states[row, :, : self.lengths[index]]
        return computed

    def fill(self, indices: Iterable[int] | None = None) -> int:
        """Put the states of `indices` (default: every sample) into the cache; returns how many
        went through the backbone."""
        wanted = range(len(self.data)) if indices is None else indices
        missing = [int(index) for index in wanted if int(index) not in self.cache]
        self.cache.stats.misses += len(missing)  # a miss: a sample the backbone had to run for
        for index, states in self._compute(missing).items():
            self.cache.put(index, states)
        return len(missing)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        found = {int(index): self.cache.get(int(index)) for index in indices}
        missing = [index for index, states in found.items() if states is None]
        if missing:
            computed = self._compute(missing)
            for index, states in computed.items():
                found[index] = states
                self.cache.put(index, states)
        return pad_batch([found[int(index)] for index in indices])  # type: ignore[misc]


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification; mean squared error for STS-B's one regression output
    (what the LoRA path's sequence-classification model does too)."""
    if logits.shape[-1] == 1:
        return functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return functional.cross_entropy(logits, labels)


@dataclass
class AdapterGradient:
    gradients: dict[str, torch.Tensor]
    loss: float
    iterations: int
    compute_s: float


def adapter_gradient(
    adapters: ParallelAdapters,
    states: CachedStates,
    batches: Sequence[Sequence[int]],
    *,
    slowdown: float = 1.0,
) -> AdapterGradient:
    """Mean gradient of every adapter tensor over the mini-batches (one per local iteration),
    on the CPU; the adapters train on whatever device they are on."""
    if not batches:
        raise ValueError("need at least one batch")
    device = next(adapters.parameters()).device
    adapters.train()
    adapters.zero_grad(set_to_none=True)
    started = time.perf_counter()
    losses = []
    for indices in batches:
        iteration_started = time.perf_counter()
        hidden, mask = states.batch(indices)
        labels = states.data.labels[torch.as_tensor(np.asarray(indices), dtype=torch.long)]
        logits = adapters(hidden.to(device), mask.to(device))
        loss = task_loss(logits, labels.to(device))
        (loss / len(batches)).backward()
        losses.append(float(loss.detach()))
        if slowdown > 1.0:
            time.sleep((slowdown - 1.0) * (time.perf_counter() - iteration_started))
    gradients = {
        name: torch.zeros_like(p).cpu() if p.grad is None else p.grad.detach().cpu().clone()
        for name, p in adapters.named_parameters()
    }
    return AdapterGradient(
        gradients, sum(losses) / len(losses), len(batches), time.perf_counter() - started
    )

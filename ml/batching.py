"""Tokenised local data and the mini-batches of local iterations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lola_deft.ml.glue import Split


@dataclass
class EncodedSplit:
    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, (token_type_ids)
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {key: value[index] for key, value in self.inputs.items()}
        batch["labels"] = self.labels[index]
        return batch


def encode(tokenizer: Any, split: Split, max_length: int) -> EncodedSplit:
    columns = list(zip(*split.texts, strict=True))
    encoded = tokenizer(
        *[list(column) for column in columns],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    labels = torch.as_tensor(split.labels)
    return EncodedSplit({key: value for key, value in encoded.items()}, labels)


class BatchSampler:
    """Endless shuffled mini-batches over a local split (reshuffled every epoch, seeded)."""

    def __init__(self, data: EncodedSplit, batch_size: int, seed: int = 0) -> None:
        if len(data) == 0:
            raise ValueError("no local training examples")
        self.data = data
        self.batch_size = min(batch_size, len(data))
        self.rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=int)
        self._position = 0

    def next_indices(self) -> np.ndarray:
        """The next mini-batch's sample indices (PAC reads their cached states by index)."""
        if self._position + self.batch_size > len(self._order):
            self._order = self.rng.permutation(len(self.data))
            self._position = 0
        indices = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return indices

    def next_batch(self) -> dict[str, torch.Tensor]:
        return self.data.batch(self.next_indices())

    def take(self, count: int) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(count):
            yield self.next_batch()

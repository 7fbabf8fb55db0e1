"""Who trains the classification head each round, and what that makes the payload S.

The head sits above every block, so every truncated backward pass reaches it; sending its
gradient is a choice, and for a base-size model it dominates the upload (roberta-base's head is
about 590k values against 12k per block's LoRA, 25 times the paper's S):

- `every` (default): every device uploads the head's gradient with its block's; the coordinator
  combines them (`--head-aggregation`). S = block + head.
- `one`: only the device of the round's shallowest block sends the head (that device has the
  least compute, so the most room for the extra upload). The scheduler plans with S = block;
  that device's modelled upload is then scaled to (block + head) / block, and the round's
  modelled latency with it, so the record says what the wire carried.
- `frozen`: every device trains the head for the first `--head-warmup-rounds` rounds, then the
  head is frozen and uploads carry the block alone: the paper's S.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lola_deft.server.messages import Allocation

HEAD_MODES = ("every", "one", "frozen")


@dataclass(frozen=True)
class HeadPolicy:
    mode: str = "every"
    warmup_rounds: int = 3  # for "frozen": rounds in which every device still trains the head

    def __post_init__(self) -> None:
        if self.mode not in HEAD_MODES:
            raise ValueError(f"unknown head training {self.mode!r}; use one of {HEAD_MODES}")

    def every_device_sends_it(self, number: int) -> bool:
        return self.mode == "every" or (self.mode == "frozen" and number <= self.warmup_rounds)

    def carriers(self, number: int, blocks: list[int]) -> set[int]:
        """The blocks of round `number` whose uploads carry the head's gradient."""
        if self.every_device_sends_it(number):
            return set(blocks)
        if self.mode == "one" and blocks:
            return {min(blocks)}
        return set()

    def payload_bits(self, number: int, block_bits: float, head_bits: float) -> float:
        """S the scheduler plans round `number` with."""
        return block_bits + head_bits if self.every_device_sends_it(number) else block_bits

    def adjust(
        self, allocation: Allocation, number: int, block_bits: float, head_bits: float
    ) -> Allocation:
        """For `one`: the head's carrier uploads (block + head) bits, not the planned S."""
        blocks = [entry.block for entry in allocation.assignment]
        if self.mode != "one" or not blocks or block_bits <= 0:
            return allocation
        carrier = min(blocks)
        factor = (block_bits + head_bits) / block_bits
        assignment = tuple(
            dataclasses.replace(
                entry,
                upload_s=entry.upload_s * factor,
                latency_s=entry.compute_s + entry.upload_s * factor,
            )
            if entry.block == carrier
            else entry
            for entry in allocation.assignment
        )
        latency = max(entry.latency_s for entry in assignment)
        return dataclasses.replace(allocation, assignment=assignment, latency_s=latency)

"""What this device reports as its per-block compute cost: the start-up profile, corrected by
what every accepted upload measured.

A start-up profile is one short measurement, often taken while other work ran, and the cost of
a round changes with what else the device does (other agents on the same cores, thermal limits,
a phone's governor). Each accepted upload's compute time is an observation of its block; the
estimate per block is the start-up cost times a robust correction factor:

- a block with observations uses the median of its own recent measured/start-up ratios;
- a block the device has not run uses the median ratio of its recent runs of any block (the
  depth structure of the start-up profile carries over, its level follows the measurements);
- the result is made non-decreasing in depth (a deeper block back-propagates through more
  layers), which also repairs a noisy start-up profile.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence


def non_decreasing(values: Sequence[float]) -> list[float]:
    """The closest non-decreasing sequence in least squares (pool adjacent violators)."""
    pools: list[list[float]] = []  # [sum, count] per pool
    for value in values:
        pools.append([value, 1.0])
        while len(pools) > 1 and pools[-2][0] / pools[-2][1] > pools[-1][0] / pools[-1][1]:
            total, count = pools.pop()
            pools[-1][0] += total
            pools[-1][1] += count
    return [total / count for total, count in pools for _ in range(int(count))]


class LiveProfile:
    """Seconds per local iteration per block (index 0 is block 1), learning from each round."""

    def __init__(self, start_up: Sequence[float], window: int = 3) -> None:
        if not start_up or min(start_up) <= 0:
            raise ValueError("a start-up profile needs a positive time per block")
        self.prior = non_decreasing(list(start_up))
        self.window = window
        self.per_block: dict[int, deque[float]] = {}
        self.recent: deque[float] = deque(maxlen=2 * window)  # ratios of any block, newest last

    def record(self, block: int, seconds_per_iteration: float) -> None:
        """One accepted upload's measured compute, per local iteration."""
        if not 1 <= block <= len(self.prior) or not seconds_per_iteration > 0:
            return
        ratio = seconds_per_iteration / self.prior[block - 1]
        self.per_block.setdefault(block, deque(maxlen=self.window)).append(ratio)
        self.recent.append(ratio)

    @property
    def factor(self) -> float:
        """How much slower (> 1) or faster than its start-up profile the device runs now."""
        return statistics.median(self.recent) if self.recent else 1.0

    def seconds(self) -> list[float]:
        overall = self.factor
        estimates = [
            prior
            * (statistics.median(self.per_block[block]) if block in self.per_block else overall)
            for block, prior in enumerate(self.prior, start=1)
        ]
        return non_decreasing(estimates)

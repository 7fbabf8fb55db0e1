"""How well the modelled compute matched the measured one, round by round.

The scheduler plans with each device's reported cost per block (live_profile on the agent); the
accepted upload says what the compute really took. Their relative gap per device-round is the
number to watch: a large one means the allocations optimise the wrong latencies.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from lola_deft.server.messages import RoundRecord


@dataclass(frozen=True)
class RoundComputeError:
    round: int
    median: float  # of |modelled - measured| / measured over the round's devices
    devices: int


def relative_errors(record: RoundRecord) -> list[float]:
    """|modelled - measured| / measured for every device that delivered in the round."""
    return [
        abs(entry.modelled_compute_s - entry.compute_s) / entry.compute_s
        for entry in record.assignment
        if entry.compute_s is not None and entry.compute_s > 0
    ]


def compute_errors(rounds: list[RoundRecord]) -> list[RoundComputeError]:
    """Per round, the median relative compute error (rounds where nobody delivered are left out)."""
    result = []
    for record in rounds:
        errors = relative_errors(record)
        if errors:
            result.append(RoundComputeError(record.round, statistics.median(errors), len(errors)))
    return result


def settled_error(rounds: list[RoundRecord], after: int = 5) -> float | None:
    """Median relative error over every device-round after the first `after` rounds (the
    profile has learnt by then); None when there are none."""
    errors = [e for record in rounds if record.round > after for e in relative_errors(record)]
    return statistics.median(errors) if errors else None

"""The legal range of every number in a scheduling instance.

Finite is not enough: a spectral efficiency of 5e-324 or 2^32 local iterations are finite, yet
they push the cost model's products and quotients past what float64 keeps exact (uploads of
1e300 s, slacks that round to zero, bandwidths that underflow), and a solver then fails in ways
no caller can act on. Every range below is far wider than any real device or link (the widest
real values are noted), and inside them every policy's arithmetic stays finite and positive:
the longest latency is under 1e40 s and the shortest upload over 1e-16 s. One table serves the
instance parser, the coordinator's report validator and the property tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Range:
    """`low` < value (or <=, when `low_closed`) and value <= `high`."""

    low: float
    high: float
    low_closed: bool = False

    def holds(self, values: np.ndarray) -> bool:
        """True when every value is finite and inside the range (one vectorised pass)."""
        above = values >= self.low if self.low_closed else values > self.low
        return bool(np.all(np.isfinite(values) & above & (values <= self.high)))

    def problem(self, value: float) -> str | None:
        """What is wrong with one value, or None."""
        if value != value or value in (float("inf"), float("-inf")):
            return f"must be finite, got {value!r}"
        if self.low_closed and value < self.low:
            return f"must be >= {self.low:g}, got {value!r}"
        if not self.low_closed and value <= self.low:
            return f"must be > {self.low:g}, got {value!r}"
        if value > self.high:
            return f"must be at most {self.high:g}, got {value!r}"
        return None


MAX_BLOCKS = 4096  # the deepest encoders have ~100 layers
MAX_LOCAL_ITERATIONS = 1_000_000  # the paper uses 10
# Seconds per local iteration of one block: a fast GPU takes ~1e-4 s, a phone ~10 s.
SECONDS_PER_ITERATION = Range(1e-9, 1e6)
COMPUTE_FACTOR = Range(1e-6, 1e6)  # relative speed against the reference device
# r_k = log2(1 + SNR) in bit/s/Hz: 1e-9 is an SNR of -88 dB (a deep fade of the paper's
# channel model reaches -65 dB), 1e3 is 3,000 dB (real links: under 40).
SPECTRAL_EFFICIENCY = Range(1e-9, 1e3)
PAYLOAD_BITS = Range(1.0, 1e15, low_closed=True)  # S: up to 125 TB per upload
BANDWIDTH_HZ = Range(1.0, 1e12, low_closed=True)  # B: up to 1 THz
MEMORY_BYTES = Range(0.0, 1e18, low_closed=True)  # up to 1 EB, on a device or for a block
# A measured uplink rate, bit/s: 1 bit/s to 1 Tbit/s (the fastest real radio: ~10 Gbit/s).
UPLINK_BPS = Range(1.0, 1e12, low_closed=True)

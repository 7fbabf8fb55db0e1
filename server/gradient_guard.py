"""What an upload's numbers must satisfy before they may touch the model.

Finite is not enough: two finite 3e38 gradients overflow Adam's moments and the model is lost
for good. Every tensor must be finite and its L2 norm (computed in float64, so it cannot
overflow itself) under a fixed bound (--max-grad-norm, 1e6); the upload's total norm
must be under a relative bound once there is a history: --grad-norm-factor times the median
total norm of recently accepted uploads. The relative bound is on the whole upload, not per
tensor: LoRA's A matrices start with zero gradients (B is initialised to zero) that grow by
orders of magnitude as B moves, so a per-tensor history would refuse honest training. A
rejected upload changes nothing; the caller names it in the log and the metrics. The reported
loss and compute time are checked too, since they reach the printed and exported loss.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lola_deft.server.errors import GradientRefused

HISTORY = 32  # recently accepted upload norms kept
WARM_UP = 5  # accepted uploads before the relative bound applies
MAX_LOSS = 1e4  # a cross-entropy loss past this is no training loss
MAX_COMPUTE_S = 7 * 24 * 3600.0


def tensor_norm(value: np.ndarray) -> float:
    flat = value.astype(np.float64, copy=False).ravel()
    return float(math.sqrt(float(np.dot(flat, flat))))


@dataclass
class GradientGuard:
    max_norm: float | None = 1e6  # fixed bound on every tensor's norm (None: none)
    factor: float | None = 100.0  # relative bound on the upload's norm (None: off)
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def relative_bound(self) -> float:
        if self.factor is None or len(self.history) < WARM_UP:
            return math.inf
        return self.factor * float(np.median(self.history)) + 1e-12

    def check(
        self, tensors: Mapping[str, np.ndarray], train_loss: float, compute_s: float
    ) -> float:
        """The upload's total norm, or GradientRefused naming the first offending value."""
        if not (math.isfinite(train_loss) and 0 <= train_loss <= MAX_LOSS):
            raise GradientRefused(
                "train_loss", f"must be within [0, {MAX_LOSS:g}], got {train_loss:.4g}"
            )
        if not (math.isfinite(compute_s) and 0 <= compute_s <= MAX_COMPUTE_S):
            raise GradientRefused(
                "compute_s", f"must be within [0, {MAX_COMPUTE_S:g}] s, got {compute_s:.4g}"
            )
        squares = 0.0
        for name, value in tensors.items():
            if not np.all(np.isfinite(value)):
                raise GradientRefused(f"tensor {name}", "has non-finite values (NaN or inf)")
            norm = tensor_norm(value)
            if self.max_norm is not None and norm > self.max_norm:
                raise GradientRefused(
                    f"tensor {name}", f"norm {norm:.3g} exceeds --max-grad-norm {self.max_norm:.3g}"
                )
            squares += norm * norm
        total = math.sqrt(squares)
        limit = self.relative_bound()
        if total > limit:
            raise GradientRefused(
                "gradient",
                f"norm {total:.3g} exceeds {self.factor:g}x the median of recent uploads "
                f"({limit:.3g})",
            )
        return total

    def accepted(self, norm: float) -> None:
        """Learn the norm of an upload that was applied."""
        self.history.append(norm)

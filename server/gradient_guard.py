"""What an upload's numbers must satisfy before they may touch the model.

Finite is not enough: two finite 3e38 gradients overflow Adam's moments and the model is lost
for good. Every tensor's L2 norm (computed in float64, so it cannot overflow itself) must stay
under a bound: a fixed one (--max-grad-norm) and, once a tensor has a history, a relative one
(--grad-norm-factor times the median of its recent accepted norms). A rejected upload changes
nothing; the caller names it in the log and the metrics. The reported loss and compute time are
checked too, since they reach the printed and exported training loss.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lola_deft.server.errors import GradientRefused

HISTORY = 32  # recent accepted norms kept per tensor
WARM_UP = 3  # accepted norms before the relative bound applies
MAX_LOSS = 1e4  # a cross-entropy loss past this is no training loss
MAX_COMPUTE_S = 7 * 24 * 3600.0


def tensor_norm(value: np.ndarray) -> float:
    return float(np.linalg.norm(value.astype(np.float64, copy=False).ravel()))


@dataclass
class GradientGuard:
    max_norm: float | None = None  # fixed bound on every tensor's norm (None: only relative)
    factor: float | None = 10.0  # relative bound: times the median recent norm (None: off)
    history: dict[str, deque[float]] = field(default_factory=dict)

    def bound(self, name: str) -> float:
        bounds = [math.inf if self.max_norm is None else self.max_norm]
        recent = self.history.get(name)
        if self.factor is not None and recent is not None and len(recent) >= WARM_UP:
            bounds.append(self.factor * float(np.median(recent)) + 1e-12)
        return min(bounds)

    def check(
        self, tensors: Mapping[str, np.ndarray], train_loss: float, compute_s: float
    ) -> dict[str, float]:
        """The tensors' norms, or GradientRefused naming the first offending value."""
        if not (math.isfinite(train_loss) and 0 <= train_loss <= MAX_LOSS):
            raise GradientRefused(
                "train_loss", f"must be within [0, {MAX_LOSS:g}], got {train_loss:.4g}"
            )
        if not (math.isfinite(compute_s) and 0 <= compute_s <= MAX_COMPUTE_S):
            raise GradientRefused(
                "compute_s", f"must be within [0, {MAX_COMPUTE_S:g}] s, got {compute_s:.4g}"
            )
        norms: dict[str, float] = {}
        for name, value in tensors.items():
            if not np.all(np.isfinite(value)):
                raise GradientRefused(f"tensor {name}", "has non-finite values (NaN or inf)")
            norm = tensor_norm(value)
            limit = self.bound(name)
            if norm > limit:
                raise GradientRefused(
                    f"tensor {name}", f"norm {norm:.3g} exceeds the bound {limit:.3g}"
                )
            norms[name] = norm
        return norms

    def accepted(self, norms: Mapping[str, float]) -> None:
        """Learn the norms of an upload that was applied."""
        for name, norm in norms.items():
            self.history.setdefault(name, deque(maxlen=HISTORY)).append(norm)

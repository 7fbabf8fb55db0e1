"""PAC+'s cache-filling pipelines on the coordinator: the relay between a pipeline's stages.

A pipeline fills one owner's activation cache. The owner runs the first units on its own
samples, micro-batch by micro-batch, and uploads its last state ("hidden") and the padding
mask; each helper downloads its input, runs its units and uploads the states of all of them;
the coordinator hands the last of those to the next stage and keeps all of them for the owner,
who downloads them and caches its samples' states. States go through the coordinator rather
than device to device because agents open no ports (phones and boards behind NAT), and the
coordinator already authenticates every device: a helper learns nothing of the owner but the
states it must process, and no device can reach another.

Everything is checked before it is kept: the uploader is the stage's device, the micro-batch
is one it may send now, the tensors have exactly the job's shapes, and their values are finite
and within `max_abs` (an encoder's hidden states are normalised: a huge value is a broken or
hostile stage). At most `window` micro-batches are in flight, so the coordinator holds at most
that many micro-batches' states per pipeline. A stage's device that dies, or the job's
deadline, aborts the pipeline; the owner keeps what it cached so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lola_deft.server.errors import (
    DeadlinePassed,
    GradientRefused,
    NotAssigned,
    NotNow,
    NotReady,
    PipelineAborted,
)

WINDOW = 4  # micro-batches in flight per pipeline
MAX_ABS = 1e4  # larger hidden-state values are refused


@dataclass(frozen=True)
class StagePlan:
    device: str
    first_unit: int
    last_unit: int  # inclusive

    @property
    def units(self) -> int:
        return self.last_unit - self.first_unit + 1


@dataclass
class PipelineJob:
    job: str
    stages: tuple[StagePlan, ...]  # stages[0]: the owner's, units 0..k
    micro_batches: int
    micro_batch_size: int
    max_length: int
    hidden_size: int
    deadline: float  # a clock() value
    window: int = WINDOW
    max_abs: float = MAX_ABS
    clock: Callable[[], float] = time.monotonic
    failure: str | None = None
    _inputs: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    _taken: set[tuple[int, int]] = field(default_factory=set)  # inputs a helper downloaded
    _received: set[tuple[int, int]] = field(default_factory=set)  # (stage, micro-batch)
    _masks: dict[int, np.ndarray] = field(default_factory=dict)
    _pieces: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    _collected: set[int] = field(default_factory=set)
    _oldest: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def owner(self) -> str:
        return self.stages[0].device

    @property
    def devices(self) -> list[str]:
        return [stage.device for stage in self.stages]

    def finished(self) -> bool:
        return len(self._collected) == self.micro_batches

    def stage_of(self, device: str) -> int:
        for index, stage in enumerate(self.stages):
            if stage.device == device:
                return index
        raise NotAssigned(f"this device has no stage in pipeline {self.job}")

    def _oldest_uncollected(self) -> int:
        """The first micro-batch the owner has not collected (constant time per call, amortised:
        the scan only moves forward)."""
        while self._oldest in self._collected:
            self._oldest += 1
        return self._oldest

    def fail(self, reason: str) -> None:
        if self.failure is None and not self.finished():
            self.failure = reason
            self._inputs.clear()
            self._pieces.clear()
            self._masks.clear()
            self._changed.set()

    def _check_open(self) -> None:
        if self.failure is not None:
            raise PipelineAborted(f"pipeline {self.job} stopped: {self.failure}")
        if self.clock() > self.deadline:
            self.fail("its deadline passed")
            raise DeadlinePassed(f"pipeline {self.job}'s deadline has passed")

    def _check_micro_batch(self, micro_batch: int) -> None:
        if not 0 <= micro_batch < self.micro_batches:
            raise NotNow(
                f"micro_batch {micro_batch}: this pipeline has 0..{self.micro_batches - 1}"
            )

    # -- uploads --------------------------------------------------------------------------------
    def upload_shapes(self, device: str, micro_batch: int) -> dict[str, tuple[int, ...]]:
        """The tensors this device's upload for `micro_batch` must carry (checked first)."""
        self._check_open()
        self._check_micro_batch(micro_batch)
        stage = self.stage_of(device)
        if (stage, micro_batch) in self._received:
            raise NotNow(f"micro-batch {micro_batch} of this stage was already received")
        batch, tokens = self.micro_batch_size, self.max_length
        if stage == 0:
            oldest = self._oldest_uncollected()
            if micro_batch >= oldest + self.window:
                raise NotReady(
                    f"micro-batch {micro_batch} is ahead of the pipeline (at most "
                    f"{self.window} in flight from {oldest}); collect earlier ones first"
                )
            return {"hidden": (batch, tokens, self.hidden_size), "mask": (batch, tokens)}
        if (stage, micro_batch) not in self._taken:
            raise NotNow(f"micro-batch {micro_batch}: this stage has not downloaded its input")
        units = self.stages[stage].units
        return {"states": (batch, units, tokens, self.hidden_size)}

    def accept(self, device: str, micro_batch: int, tensors: dict[str, np.ndarray]) -> int:
        """Keep a checked upload and pass it on; returns its bytes."""
        self._check_open()
        shapes = self.upload_shapes(device, micro_batch)
        stage = self.stage_of(device)
        if set(tensors) != set(shapes):
            raise GradientRefused("states", f"expected tensors {sorted(shapes)}")
        for name, value in tensors.items():
            if tuple(value.shape) != shapes[name]:
                raise GradientRefused(name, f"shape {list(value.shape)}, expected {shapes[name]}")
            peak = float(np.max(np.abs(value))) if value.size else 0.0
            if not np.isfinite(peak) or peak > self.max_abs:
                raise GradientRefused(name, f"values must be finite and within {self.max_abs:g}")
        if stage == 0:
            mask = tensors["mask"]
            if not np.isin(mask, (0.0, 1.0)).all():
                raise GradientRefused("mask", "must hold only 0 and 1")
            self._masks[micro_batch] = mask
            self._inputs[(1, micro_batch)] = {"hidden": tensors["hidden"], "mask": mask}
        else:
            states = tensors["states"]
            self._inputs.pop((stage, micro_batch), None)  # its input is used: free it
            self._pieces.setdefault(micro_batch, {})[stage] = states
            if stage + 1 < len(self.stages):
                mask = self._masks[micro_batch]
                self._inputs[(stage + 1, micro_batch)] = {"hidden": states[:, -1], "mask": mask}
        self._received.add((stage, micro_batch))
        self._changed.set()
        return sum(value.nbytes for value in tensors.values())

    # -- downloads ------------------------------------------------------------------------------
    def _ready(self, stage: int, micro_batch: int) -> dict[str, np.ndarray] | None:
        if stage > 0:
            return self._inputs.get((stage, micro_batch))
        pieces = self._pieces.get(micro_batch, {})
        if len(pieces) < len(self.stages) - 1:
            return None
        return {"states": np.concatenate([pieces[s] for s in sorted(pieces)], axis=1)}

    async def download(self, device: str, micro_batch: int, wait_s: float) -> dict[str, np.ndarray]:
        """A helper's input, or the helpers' states for the owner; waits at most `wait_s` (then
        NotNow: ask again). Asking again for the same micro-batch gets the same tensors (a
        lost answer costs a retry), until the stage has moved past it."""
        self._check_micro_batch(micro_batch)
        stage = self.stage_of(device)
        if stage == 0 and len(self.stages) == 1:
            raise NotNow("the owner runs every unit: there is nothing to download")
        limit = time.monotonic() + wait_s
        while True:
            self._check_open()
            ready = self._ready(stage, micro_batch)
            if ready is not None:
                break
            moved_on = (
                micro_batch in self._collected
                if stage == 0
                else ((stage, micro_batch) in self._received)
            )
            if moved_on:
                raise NotNow(f"micro-batch {micro_batch} was already downloaded and used")
            left = min(limit - time.monotonic(), self.deadline - self.clock())
            if left <= 0:
                raise NotReady(f"micro-batch {micro_batch} is not ready yet; ask again")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
        if stage == 0:
            # The owner has every earlier micro-batch it asked for: those can go.
            for earlier in [m for m in self._collected if m < micro_batch and m in self._pieces]:
                del self._pieces[earlier]
            self._masks.pop(micro_batch, None)
            self._collected.add(micro_batch)
            if self.finished():
                self._pieces.clear()
        else:
            self._taken.add((stage, micro_batch))
        self._changed.set()
        return ready

    def held_bytes(self) -> int:
        """What the coordinator keeps for this pipeline now (bounded by the window)."""
        inputs = sum(v.nbytes for tensors in self._inputs.values() for v in tensors.values())
        pieces = sum(v.nbytes for stages in self._pieces.values() for v in stages.values())
        return inputs + pieces + sum(mask.nbytes for mask in self._masks.values())

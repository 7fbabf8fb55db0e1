"""Collecting one round's gradient uploads, with every check done before anything is stored.

An upload is checked twice: its header (who, which round, which block, in time) before a byte
of gradient is read, then its numbers (exactly the block's and the head's tensors, right
shapes, finite, norms within the guard's bounds, a sane loss) before it is stored. Uploads are
kept per block: block tensors come from the one device that trained the block. The
classification head is trained by the devices head_training names (by default every active
device: it sits above every block, so each truncated pass reaches it); its gradients are
combined over the uploads that carry it (mean by default, or
the coordinate-wise median or a trimmed mean, which one outlier cannot drag), so the head sees
every device's data every round.

A block whose device fails (dies, its upload is refused) becomes an orphan: the engine hands it
to an idle device (`reassign`) with a deadline of its own, or gives it up for this round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lola_deft.server.errors import DeadlinePassed, InvalidRequest, NotAssigned, NotNow
from lola_deft.server.gradient_guard import GradientGuard
from lola_deft.server.messages import Refusal, Upload, UploadAck, UploadHeader, UploadPlan

HEAD_COMBINERS = ("mean", "median", "trimmed-mean")


@dataclass
class RoundCollector:
    round: int
    assignment: dict[str, int]  # device -> the block it holds now (until it uploads or fails)
    shapes: dict[str, tuple[int, ...]]
    block_names: dict[int, list[str]]
    head_names: list[str]
    deadline: float  # a clock() value: the first holders' deadline
    guard: GradientGuard = field(default_factory=GradientGuard)
    head_combiner: str = "mean"
    # The blocks whose uploads carry the head's gradient (head_training); None: every block.
    head_blocks: set[int] | None = None
    # Per block, how much its upload counts in the head's mean (PAC+: its device's mini-batches
    # when the round's work was shared by speed); None: equally.
    weights: dict[int, float] | None = None
    # A first holder's own deadline, where it is earlier than `deadline` (from the latency
    # its report predicts: a silent holder is found out early).
    holder_deadlines: dict[str, float] | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.assignment = dict(self.assignment)
        self.blocks = set(self.assignment.values())  # what this round trains
        self.carriers: set[int] = set(self.blocks if self.head_blocks is None else self.head_blocks)
        own = self.holder_deadlines or {}
        self.deadlines = {
            device: min(own.get(device, self.deadline), self.deadline) for device in self.assignment
        }
        self.uploads: dict[int, Upload] = {}  # block -> the accepted upload
        self.norms: dict[int, float] = {}  # block -> the accepted upload's total norm
        self.failures: list[Refusal] = []
        self.orphans: list[int] = []  # blocks without upload or holder, oldest first
        self.closed = False
        self.changed = asyncio.Event()  # an upload, a failure or a reassignment happened
        self._receiving: set[str] = set()

    def names_of(self, block: int) -> list[str]:
        """The tensors an upload of `block` must carry: its LoRA, and the head if it is one
        of the head's carriers this round."""
        head = self.head_names if block in self.carriers else []
        return self.block_names[block] + head

    # -- who holds what ------------------------------------------------------------------------
    def deadline_for(self, device_id: str) -> float:
        return self.deadlines.get(device_id, self.deadline)

    def settled(self) -> bool:
        """Nobody holds a block any more: every block arrived, or the rest are orphans."""
        return not self.assignment

    def fail(self, device_id: str, kind: str, reason: str) -> int | None:
        """The device will not deliver its block (dead, or its upload was refused): the block
        becomes an orphan. Returns the block, or None if the device held none."""
        block = self.assignment.pop(device_id, None)
        if block is None:
            return None
        self.deadlines.pop(device_id, None)
        self.failures.append(Refusal(device_id, block, reason, kind))
        if block not in self.uploads:
            self.orphans.append(block)
        self.changed.set()
        return block

    def failed_devices(self, block: int) -> set[str]:
        return {f.device for f in self.failures if f.block == block}

    def reassign(self, block: int, device_id: str, deadline: float) -> None:
        """Hand an orphan to an idle device, with its own deadline."""
        if device_id in self.assignment:
            raise ValueError(f"{device_id} already holds block {self.assignment[device_id]}")
        self.orphans.remove(block)
        self.assignment[device_id] = block
        self.deadlines[device_id] = deadline
        self.changed.set()

    # -- uploads -------------------------------------------------------------------------------
    def plan(self, device_id: str, header: UploadHeader) -> UploadPlan:
        """Check an upload's header; returns the tensors the stream must carry."""
        if header.round != self.round:
            raise NotNow(f"upload is for round {header.round}, but round {self.round} is running")
        previous = self.uploads.get(header.block)
        if previous is not None and previous.device_id == device_id:
            return UploadPlan(device_id, previous.block, {}, True, previous.num_bytes)
        if self.closed:
            raise NotNow(f"round {self.round} is already closed")
        expected_block = self.assignment.get(device_id)
        if expected_block is None:
            raise NotAssigned(f"this device holds no block in round {self.round}")
        if header.block != expected_block:
            raise NotAssigned(
                f"this device holds block {expected_block}, uploaded block {header.block}"
            )
        deadline = self.deadline_for(device_id)
        if self.clock() > deadline:
            raise DeadlinePassed(f"round {self.round}'s deadline has passed")
        if device_id in self._receiving:
            raise NotNow("an upload from this device is already in progress")
        self._receiving.add(device_id)
        shapes = {n: self.shapes[n] for n in self.names_of(expected_block)}
        return UploadPlan(device_id, expected_block, shapes, deadline=deadline)

    def abandon(self, device_id: str, kind: str, reason: str) -> None:
        """A planned upload ended without being accepted (refused, broke, too late): the device
        loses its hold on the block, which another device can then take over at once."""
        self._receiving.discard(device_id)
        self.fail(device_id, kind, reason)

    def accept(self, upload: Upload) -> UploadAck:
        """Store a planned upload whose tensors passed the stream checks. An upload whose
        numbers are refused fails its device's hold on the block (raises GradientRefused)."""
        self._receiving.discard(upload.device_id)
        if self.closed:
            raise NotNow(f"round {self.round} is already closed")
        if self.assignment.get(upload.device_id) != upload.block:
            raise NotAssigned(f"this device no longer holds block {upload.block}")
        if self.clock() > self.deadline_for(upload.device_id):
            raise DeadlinePassed(f"round {self.round}'s deadline has passed")
        if set(upload.tensors) != set(self.names_of(upload.block)):
            raise InvalidRequest(f"block {upload.block} gradient", "wrong set of tensors")
        for name, value in upload.tensors.items():
            if tuple(value.shape) != self.shapes[name]:
                raise InvalidRequest(
                    f"tensor {name}", f"shape {list(value.shape)}, expected {self.shapes[name]}"
                )
        try:
            norm = self.guard.check(upload.tensors, upload.train_loss, upload.compute_s)
        except InvalidRequest as error:
            self.fail(upload.device_id, "refused", f"refused: {error}")
            raise
        del self.assignment[upload.device_id]
        self.uploads[upload.block] = upload
        self.norms[upload.block] = norm
        self.changed.set()
        return UploadAck(self.round, upload.block, upload.num_bytes, duplicate=False)

    def close(self) -> dict[int, Upload]:
        self.closed = True
        return dict(self.uploads)

    def aggregate(self) -> dict[str, np.ndarray]:
        """Block gradients as uploaded, head gradients combined over the uploads (in float64:
        a mean of large finite float32 values must not overflow)."""
        uploads = self.close()
        gradients: dict[str, np.ndarray] = {}
        for upload in uploads.values():
            for name in self.block_names[upload.block]:
                gradients[name] = upload.tensors[name]
        blocks = [block for block in uploads if block in self.carriers]
        if blocks:  # none: the head does not move this round (frozen, or its carrier failed)
            weights = None
            if self.weights is not None and self.head_combiner == "mean":
                weights = np.asarray([self.weights.get(block, 1.0) for block in blocks])
            for name in self.head_names:
                stacked = np.stack([uploads[b].tensors[name] for b in blocks]).astype(np.float64)
                combined = (
                    combine(stacked, self.head_combiner)
                    if weights is None
                    else np.tensordot(weights / weights.sum(), stacked, axes=1)
                )
                gradients[name] = combined.astype(np.float32)
        return gradients

    def accepted_norms(self) -> None:
        """Teach the guard the norms of this round's uploads (once they were applied)."""
        for norm in self.norms.values():
            self.guard.accepted(norm)


def combine(stacked: np.ndarray, how: str) -> np.ndarray:
    """Combine per-device values along axis 0: the mean, the coordinate-wise median, or the
    mean of what is left after dropping the largest and smallest 20% (at least one each side
    once there are three or more)."""
    if how == "mean":
        return stacked.mean(axis=0)
    if how == "median":
        return np.median(stacked, axis=0)
    if how == "trimmed-mean":
        count = stacked.shape[0]
        cut = max(1, int(0.2 * count)) if count >= 3 else 0
        ordered = np.sort(stacked, axis=0)
        return ordered[cut : count - cut].mean(axis=0)
    raise ValueError(f"unknown head combiner {how!r}; use one of {HEAD_COMBINERS}")

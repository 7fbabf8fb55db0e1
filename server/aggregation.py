"""Collecting one round's gradient uploads, with every check done before anything is stored.

An upload is checked twice: its header (who, which round, which block, in time) before a byte
of gradient is read, then its tensors (exactly the block's and the head's, right shapes, all
finite) before it is stored. Block tensors come from the one device that trained the block. The
classification head is trained by every active device (it sits above every block, so each
truncated pass reaches it); its gradients are averaged over the devices that uploaded, which is
the mini-batch gradient over all their data, so the head sees every device's data every round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from lola_deft.server.errors import DeadlinePassed, InvalidRequest, NotAssigned, NotNow
from lola_deft.server.messages import Upload, UploadAck, UploadHeader, UploadPlan


class RoundCollector:
    def __init__(
        self,
        round_number: int,
        assignment: dict[str, int],
        shapes: dict[str, tuple[int, ...]],
        block_names: dict[int, list[str]],
        head_names: list[str],
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.round = round_number
        self.assignment = assignment
        self.shapes = shapes
        self.block_names = block_names
        self.head_names = head_names
        self.deadline = deadline  # a clock() value
        self.clock = clock
        self.uploads: dict[str, Upload] = {}
        self.closed = False
        self.complete = asyncio.Event()
        self._receiving: set[str] = set()
        if not assignment:
            self.complete.set()

    def plan(self, device_id: str, header: UploadHeader) -> UploadPlan:
        """Check an upload's header; returns the tensors the stream must carry."""
        if header.round != self.round:
            raise NotNow(f"upload is for round {header.round}, but round {self.round} is running")
        expected_block = self.assignment.get(device_id)
        previous = self.uploads.get(device_id)
        if previous is not None and header.block == previous.block:
            return UploadPlan(device_id, previous.block, {}, True, previous.num_bytes)
        if self.closed:
            raise NotNow(f"round {self.round} is already closed")
        if expected_block is None:
            raise NotAssigned(f"this device has no block in round {self.round}")
        if header.block != expected_block:
            raise NotAssigned(
                f"this device was assigned block {expected_block}, uploaded block {header.block}"
            )
        if self.clock() > self.deadline:
            raise DeadlinePassed(f"round {self.round}'s deadline has passed")
        if device_id in self._receiving:
            raise NotNow("an upload from this device is already in progress")
        self._receiving.add(device_id)
        names = self.block_names[expected_block] + self.head_names
        shapes = {n: self.shapes[n] for n in names}
        return UploadPlan(device_id, expected_block, shapes, deadline=self.deadline)

    def abandon(self, device_id: str) -> None:
        """The stream of a planned upload failed: the device may try again."""
        self._receiving.discard(device_id)

    def accept(self, upload: Upload) -> UploadAck:
        """Store a planned upload whose tensors passed the stream checks."""
        self._receiving.discard(upload.device_id)
        if self.closed:
            raise NotNow(f"round {self.round} is already closed")
        if self.clock() > self.deadline:
            raise DeadlinePassed(f"round {self.round}'s deadline has passed")
        expected = set(self.block_names[upload.block]) | set(self.head_names)
        if set(upload.tensors) != expected:
            raise InvalidRequest(f"block {upload.block} gradient", "wrong set of tensors")
        for name, value in upload.tensors.items():
            if tuple(value.shape) != self.shapes[name]:
                raise InvalidRequest(
                    f"tensor {name}", f"shape {list(value.shape)}, expected {self.shapes[name]}"
                )
            if not np.all(np.isfinite(value)):
                raise InvalidRequest(f"tensor {name}", "has non-finite values (NaN or inf)")
        self.uploads[upload.device_id] = upload
        if len(self.uploads) == len(self.assignment):
            self.complete.set()
        return UploadAck(self.round, upload.block, upload.num_bytes, duplicate=False)

    def missing_devices(self) -> set[str]:
        return set(self.assignment) - set(self.uploads)

    def close(self) -> dict[str, Upload]:
        self.closed = True
        return dict(self.uploads)

    def aggregate(self) -> dict[str, np.ndarray]:
        """Block gradients as uploaded, head gradients averaged over the uploading devices
        (accumulated in float64: a mean of large finite float32 values must not overflow)."""
        uploads = self.close()
        gradients: dict[str, np.ndarray] = {}
        for upload in uploads.values():
            for name in self.block_names[upload.block]:
                gradients[name] = upload.tensors[name]
        if uploads:
            for name in self.head_names:
                stacked = np.stack([u.tensors[name] for u in uploads.values()])
                gradients[name] = stacked.mean(axis=0, dtype=np.float64).astype(np.float32)
        return gradients

"""Collecting one round's gradient uploads, with every check done before anything is stored.

Block tensors come from the one device that trained the block. The classification head is
trained by every active device (it sits above every block, so each truncated pass reaches it);
its gradients are averaged over the devices that uploaded, which is the mini-batch gradient over
all their data, so the head sees every device's data every round.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np

from lola_deft.protos.tensor_stream import TensorBundle


class UploadRejected(Exception):
    """Carries the gRPC status an upload is rejected with; nothing was stored."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Upload:
    device_id: str
    block: int
    tensors: dict[str, np.ndarray]
    compute_s: float
    upload_s: float
    num_bytes: int
    train_loss: float


class RoundCollector:
    def __init__(
        self,
        round_number: int,
        assignment: dict[str, int],
        shapes: dict[str, tuple[int, ...]],
        block_names: dict[int, list[str]],
        head_names: list[str],
        deadline: float,
    ) -> None:
        self.round = round_number
        self.assignment = assignment
        self.shapes = shapes
        self.block_names = block_names
        self.head_names = head_names
        self.deadline = deadline  # time.monotonic() value
        self.uploads: dict[str, Upload] = {}
        self.closed = False
        self._condition = threading.Condition()

    def accept(self, device_id: str, bundle: TensorBundle, upload_s: float) -> tuple[bool, int]:
        """Validate and store one upload. Returns (was_duplicate, bytes)."""
        with self._condition:
            previous = self.uploads.get(device_id)
            if (
                previous is not None
                and bundle.round == self.round
                and bundle.block == previous.block
            ):
                return True, previous.num_bytes  # a retry: acknowledged, not applied twice
            if bundle.round != self.round:
                raise UploadRejected(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"upload is for round {bundle.round}, but round {self.round} is running",
                )
            if self.closed:
                raise UploadRejected(
                    grpc.StatusCode.FAILED_PRECONDITION, f"round {self.round} is already closed"
                )
            if device_id not in self.assignment:
                raise UploadRejected(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"device {device_id!r} has no block in round {self.round}",
                )
            expected_block = self.assignment[device_id]
            if bundle.block != expected_block:
                raise UploadRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"device {device_id!r} was assigned block {expected_block}, "
                    f"uploaded block {bundle.block}",
                )
            if time.monotonic() > self.deadline:
                raise UploadRejected(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"round {self.round}'s deadline has passed"
                )
            self._check_tensors(expected_block, bundle.tensors)
            upload = Upload(
                device_id,
                expected_block,
                bundle.tensors,
                bundle.compute_s,
                upload_s,
                bundle.num_bytes,
                bundle.train_loss,
            )
            self.uploads[device_id] = upload
            self._condition.notify_all()
            return False, upload.num_bytes

    def _check_tensors(self, block: int, tensors: dict[str, np.ndarray]) -> None:
        expected = set(self.block_names[block]) | set(self.head_names)
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise UploadRejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"block {block} gradient: missing tensors {missing[:3]}, "
                f"unexpected tensors {unexpected[:3]}",
            )
        for name, value in tensors.items():
            if tuple(value.shape) != self.shapes[name]:
                raise UploadRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"tensor {name}: shape {list(value.shape)}, expected {list(self.shapes[name])}",
                )
            if not np.all(np.isfinite(value)):
                raise UploadRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"tensor {name} has non-finite values (NaN or inf)",
                )

    def missing_devices(self) -> set[str]:
        with self._condition:
            return set(self.assignment) - set(self.uploads)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every assigned device; True when all uploaded."""
        with self._condition:
            return self._condition.wait_for(
                lambda: len(self.uploads) == len(self.assignment), timeout=max(timeout, 0.0)
            )

    def close(self) -> dict[str, Upload]:
        with self._condition:
            self.closed = True
            return dict(self.uploads)

    def aggregate(self) -> dict[str, np.ndarray]:
        """Block gradients as uploaded, head gradients averaged over the uploading devices."""
        uploads = self.close()
        gradients: dict[str, np.ndarray] = {}
        for upload in uploads.values():
            for name in self.block_names[upload.block]:
                gradients[name] = upload.tensors[name]
        if uploads:
            for name in self.head_names:
                gradients[name] = np.mean([u.tensors[name] for u in uploads.values()], axis=0)
        return gradients

"""Named float tensors <-> streams of deft.v1.TensorChunk messages.

Adapters and gradients are split into CHUNK_BYTES pieces so no message nears the gRPC size limit,
and reassembled with every check a receiver needs before it trusts the data: one session, round
and block per stream, contiguous offsets, the byte count the shape implies, a CRC32 per tensor,
an upper bound on the total, and a dtype from a short allow-list.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from lola_deft.protos.deft.v1 import coordinator_pb2
from lola_deft.protos.grpc_options import CHUNK_BYTES

ALLOWED_DTYPES = {"float32": np.float32}
DEFAULT_MAX_TOTAL_BYTES = 1 << 30


class TensorStreamError(ValueError):
    """A stream that cannot be trusted; the message says what is wrong with it."""


@dataclass
class TensorBundle:
    """What a stream carried: its routing header and the tensors by name."""

    session: str = ""
    round: int = 0
    block: int = 0
    compute_s: float = 0.0
    train_loss: float = 0.0
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def to_chunks(
    tensors: Mapping[str, np.ndarray],
    *,
    session: str = "",
    round: int = 0,
    block: int = 0,
    compute_s: float = 0.0,
    train_loss: float = 0.0,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[coordinator_pb2.TensorChunk]:
    """Yield the chunks of every tensor in order (float32, C order)."""
    first = True
    for name, value in tensors.items():
        array = np.ascontiguousarray(value, dtype=np.float32)
        data = memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # no copy yet
        crc = zlib.crc32(data)
        offsets = range(0, max(len(data), 1), chunk_bytes)
        for offset in offsets:
            piece = data[offset : offset + chunk_bytes].tobytes()
            last = offset + chunk_bytes >= len(data)
            yield coordinator_pb2.TensorChunk(
                session=session,
                round=round,
                block=block,
                name=name,
                shape=list(array.shape),
                dtype="float32",
                offset=offset,
                total_bytes=len(data),
                data=piece,
                crc32=crc if last else 0,
                compute_s=compute_s if first else 0.0,
                train_loss=train_loss if first else 0.0,
            )
            first = False


def from_chunks(
    chunks: Iterable[coordinator_pb2.TensorChunk], *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
) -> TensorBundle:
    """Reassemble a stream; raises TensorStreamError naming the first problem."""
    bundle: TensorBundle | None = None
    current: str | None = None
    buffer = bytearray()
    expected_total = 0
    shape: tuple[int, ...] = ()
    total = 0
    crc = 0

    def finish(chunk: coordinator_pb2.TensorChunk) -> None:
        if crc != chunk.crc32:
            raise TensorStreamError(f"tensor {current!r}: CRC32 mismatch, data corrupted")
        assert bundle is not None and current is not None
        # The buffer is this tensor's alone from here on, so the array may keep it (no copy).
        bundle.tensors[current] = np.frombuffer(buffer, dtype=np.float32).reshape(shape)

    for chunk in chunks:
        if bundle is None:
            bundle = TensorBundle(
                chunk.session, chunk.round, chunk.block, chunk.compute_s, chunk.train_loss
            )
        elif (chunk.session, chunk.round, chunk.block) != (
            bundle.session,
            bundle.round,
            bundle.block,
        ):
            raise TensorStreamError(
                f"chunk of {chunk.name!r} is for round {chunk.round} block {chunk.block}, but the "
                f"stream started as round {bundle.round} block {bundle.block}"
            )
        if chunk.name != current:
            if current is not None:
                raise TensorStreamError(f"tensor {current!r} ended early at {len(buffer)} bytes")
            if not chunk.name:
                raise TensorStreamError("chunk without a tensor name")
            if chunk.name in bundle.tensors:
                raise TensorStreamError(f"tensor {chunk.name!r} sent twice")
            if chunk.dtype not in ALLOWED_DTYPES:
                raise TensorStreamError(f"tensor {chunk.name!r}: unsupported dtype {chunk.dtype!r}")
            current, shape, buffer, crc = chunk.name, tuple(chunk.shape), bytearray(), 0
            expected_total = chunk.total_bytes
            implied = int(np.prod(shape, dtype=np.int64)) * 4
            if implied != expected_total:
                raise TensorStreamError(
                    f"tensor {current!r}: shape {list(shape)} needs {implied} bytes, "
                    f"header says {expected_total}"
                )
            total += expected_total
            if total > max_total_bytes:
                raise TensorStreamError(f"stream exceeds the limit of {max_total_bytes} bytes")
        if chunk.offset != len(buffer) or tuple(chunk.shape) != shape:
            raise TensorStreamError(
                f"tensor {current!r}: chunk at offset {chunk.offset} out of order "
                f"(expected {len(buffer)})"
            )
        buffer.extend(chunk.data)
        crc = zlib.crc32(chunk.data, crc)
        if len(buffer) > expected_total:
            raise TensorStreamError(
                f"tensor {current!r}: more bytes than the {expected_total} declared"
            )
        if len(buffer) == expected_total:
            finish(chunk)
            current = None
    if current is not None:
        raise TensorStreamError(f"tensor {current!r} ended early at {len(buffer)} bytes")
    if bundle is None:
        raise TensorStreamError("empty stream")
    return bundle

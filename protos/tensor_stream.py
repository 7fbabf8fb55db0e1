"""Named float tensors <-> streams of deft.v1.TensorChunk messages.

On the wire a tensor is float32, or float16 / bfloat16 where the coordinator asks for smaller
uploads (`--upload-dtype`: half the bytes; the receiver widens back to float32). float16 keeps
10 mantissa bits but saturates at +-65504 (values beyond are clipped to it, so a large honest
gradient stays finite and the coordinator's norm bounds judge it); bfloat16 keeps float32's
range with 7 mantissa bits (rounded to nearest even).

Adapters and gradients are split into CHUNK_BYTES pieces so no message nears the gRPC size
limit, and reassembled with every check a receiver needs before it trusts the data: contiguous
offsets, the byte count the shape implies (computed exactly, it cannot overflow), a CRC32 per
tensor, a dtype from a short allow-list, an upper bound on the total checked before a tensor's
bytes are buffered, and, where the receiver knows them, exactly the expected names and shapes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from lola_deft.protos.deft.v1 import coordinator_pb2
from lola_deft.protos.grpc_options import CHUNK_BYTES
from lola_deft.protos.quoting import quote

# Wire dtype -> bytes per element.
ALLOWED_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}
FLOAT16_MAX = float(np.finfo(np.float16).max)
DEFAULT_MAX_TOTAL_BYTES = 1 << 30
MAX_DIMS = 8


class TensorStreamError(ValueError):
    """A stream that cannot be trusted; the message says what is wrong with it."""


class StreamTooLarge(TensorStreamError):
    """A stream that carries more bytes than the receiver accepts."""


def to_wire(value: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """A tensor as the contiguous array its wire dtype sends (bfloat16 as its uint16 bits)."""
    # ascontiguousarray makes a 0-d tensor 1-d: the shape is put back, so it arrives as sent.
    array = np.ascontiguousarray(value, dtype=np.float32).reshape(np.shape(value))
    if dtype == "float32":
        return array
    if dtype == "float16":
        return np.clip(array, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    if dtype == "bfloat16":
        bits = array.view(np.uint32)
        rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
        return (rounded >> np.uint32(16)).astype(np.uint16)
    raise ValueError(f"unknown wire dtype {dtype!r}; use one of {sorted(ALLOWED_DTYPES)}")


def from_wire(buffer: bytes | bytearray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 tensor a wire buffer of `dtype` carries."""
    if dtype == "float32":
        return np.frombuffer(buffer, np.float32).reshape(shape)
    if dtype == "float16":
        return np.frombuffer(buffer, np.float16).astype(np.float32).reshape(shape)
    bits = np.frombuffer(buffer, np.uint16).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32).reshape(shape)


def to_chunks(
    tensors: Mapping[str, np.ndarray], *, chunk_bytes: int = CHUNK_BYTES, dtype: str = "float32"
) -> Iterator[coordinator_pb2.TensorChunk]:
    """Yield the chunks of every tensor in order (C order, in the wire `dtype`)."""
    for name, value in tensors.items():
        array = to_wire(value, dtype)
        data = memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # no copy yet
        crc = zlib.crc32(data)
        for offset in range(0, max(len(data), 1), chunk_bytes):
            last = offset + chunk_bytes >= len(data)
            yield coordinator_pb2.TensorChunk(
                name=name,
                shape=list(array.shape),
                dtype=dtype,
                offset=offset,
                total_bytes=len(data),
                data=data[offset : offset + chunk_bytes].tobytes(),
                crc32=crc if last else 0,
            )


def upload_parts(
    header: coordinator_pb2.UploadHeader,
    tensors: Mapping[str, np.ndarray],
    dtype: str = "float32",
) -> Iterator[coordinator_pb2.GradientPart]:
    """A gradient upload: the header first, then the tensors' chunks."""
    yield coordinator_pb2.GradientPart(header=header)
    for chunk in to_chunks(tensors, dtype=dtype):
        yield coordinator_pb2.GradientPart(chunk=chunk)


class TensorAssembler:
    """Reassembles a chunk stream one chunk at a time, raising TensorStreamError at the first
    chunk that breaks a rule (so a bad stream is dropped before the rest of it is read)."""

    def __init__(
        self,
        expected: Mapping[str, tuple[int, ...]] | None = None,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    ) -> None:
        self.expected = expected
        self.max_total_bytes = max_total_bytes
        self.tensors: dict[str, np.ndarray] = {}
        self.total_bytes = 0
        self._name: str | None = None
        self._shape: tuple[int, ...] = ()
        self._declared = 0
        self._dtype = "float32"
        self._buffer = bytearray()
        self._crc = 0

    def feed(self, chunk: coordinator_pb2.TensorChunk) -> None:
        if chunk.name != self._name:
            if self._name is not None:
                raise TensorStreamError(
                    f"tensor {quote(self._name)} ended early at {len(self._buffer)} bytes"
                )
            self.begin(chunk)
        if chunk.offset != len(self._buffer) or tuple(chunk.shape) != self._shape:
            raise TensorStreamError(
                f"tensor {quote(self._name)}: chunk at offset {chunk.offset} out of order "
                f"(expected {len(self._buffer)})"
            )
        if chunk.dtype != self._dtype:
            raise TensorStreamError(f"tensor {quote(self._name)}: dtype changed mid-tensor")
        data = chunk.data  # each access to a bytes field copies it
        if len(self._buffer) + len(data) > self._declared:
            raise TensorStreamError(
                f"tensor {quote(self._name)}: more bytes than the {self._declared} declared"
            )
        self._buffer.extend(data)
        self._crc = zlib.crc32(data, self._crc)
        if len(self._buffer) == self._declared:
            if self._crc != chunk.crc32:
                raise TensorStreamError(f"tensor {quote(self._name)}: CRC32 mismatch, corrupted")
            self.complete(self._buffer)

    def begin(self, chunk: coordinator_pb2.TensorChunk) -> int:
        """Check a tensor's header (name, dtype, shape, declared size, the running total) before
        any of its bytes are buffered; returns the bytes it must carry."""
        name, shape = chunk.name, tuple(chunk.shape)
        if not name:
            raise TensorStreamError("chunk without a tensor name")
        if name in self.tensors:
            raise TensorStreamError(f"tensor {quote(name)} sent twice")
        if self.expected is not None and name not in self.expected:
            raise TensorStreamError(f"unexpected tensor {quote(name)}")
        if chunk.dtype not in ALLOWED_DTYPES:
            raise TensorStreamError(f"tensor {quote(name)}: unsupported dtype {quote(chunk.dtype)}")
        if len(shape) > MAX_DIMS:
            raise TensorStreamError(f"tensor {quote(name)}: more than {MAX_DIMS} dimensions")
        if self.expected is not None and shape != tuple(self.expected[name]):
            raise TensorStreamError(
                f"tensor {quote(name)}: shape {list(shape)[:MAX_DIMS]}, "
                f"expected {list(self.expected[name])}"
            )
        # Python integers: exact, whatever the dimensions.
        implied = ALLOWED_DTYPES[chunk.dtype] * math.prod(shape)
        if implied != chunk.total_bytes:
            raise TensorStreamError(
                f"tensor {quote(name)}: shape {list(shape)} needs {implied} bytes, "
                f"header says {chunk.total_bytes}"
            )
        if self.total_bytes + implied > self.max_total_bytes:
            raise StreamTooLarge(f"stream exceeds the limit of {self.max_total_bytes} bytes")
        self.total_bytes += implied
        self._name, self._shape, self._declared, self._crc = name, shape, implied, 0
        self._dtype = chunk.dtype
        self._buffer = bytearray()
        return implied

    def complete(self, buffer: bytearray) -> None:
        """The tensor begun last is whole: `buffer` holds exactly its declared bytes and is the
        tensor's alone from here on, so the array may keep it without a copy."""
        if self._name is None or len(buffer) != self._declared:
            raise TensorStreamError("tensor bytes without a tensor header")
        self.tensors[self._name] = from_wire(buffer, self._dtype, self._shape)
        self._name, self._buffer = None, bytearray()

    def finish(self) -> dict[str, np.ndarray]:
        if self._name is not None:
            raise TensorStreamError(
                f"tensor {quote(self._name)} ended early at {len(self._buffer)} bytes"
            )
        if self.expected is not None:
            missing = sorted(set(self.expected) - set(self.tensors))
            if missing:
                raise TensorStreamError(f"missing tensors {[quote(m) for m in missing[:3]]}")
        elif not self.tensors:
            raise TensorStreamError("empty stream")
        return self.tensors


def from_chunks(
    chunks: Iterable[coordinator_pb2.TensorChunk],
    *,
    expected: Mapping[str, tuple[int, ...]] | None = None,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> dict[str, np.ndarray]:
    """Reassemble a whole stream; raises TensorStreamError naming the first problem."""
    assembler = TensorAssembler(expected, max_total_bytes)
    for chunk in chunks:
        assembler.feed(chunk)
    return assembler.finish()

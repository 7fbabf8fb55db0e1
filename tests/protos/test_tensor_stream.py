"""Chunked tensor streams round-trip and reject every malformed stream."""

from __future__ import annotations

import numpy as np
import pytest

from lola_deft.protos.tensor_stream import TensorStreamError, from_chunks, to_chunks


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.normal(size=(300, 7)).astype(np.float32),
        "b": np.zeros(0, np.float32),
        "c": rng.normal(size=5).astype(np.float32),
    }


def test_round_trip_in_small_chunks() -> None:
    chunks = list(
        to_chunks(tensors(), session="s", round=3, block=2, compute_s=1.5, chunk_bytes=1000)
    )
    assert len(chunks) > 8 and all(len(c.data) <= 1000 for c in chunks)
    bundle = from_chunks(chunks)
    assert (bundle.session, bundle.round, bundle.block, bundle.compute_s) == ("s", 3, 2, 1.5)
    for name, value in tensors().items():
        assert np.array_equal(bundle.tensors[name], value)


def corrupt(kind: str) -> list:
    chunks = list(to_chunks(tensors(), session="s", round=3, block=2, chunk_bytes=1000))
    if kind == "crc":
        chunks[1].data = bytes(len(chunks[1].data))
    elif kind == "order":
        chunks[0], chunks[1] = chunks[1], chunks[0]
    elif kind == "truncated":
        chunks = chunks[:3]
    elif kind == "round":
        chunks[-1].round = 4
    elif kind == "shape":
        chunks[0].shape[:] = [301, 7]
    elif kind == "dtype":
        chunks[0].dtype = "float64"
    elif kind == "duplicate":
        chunks = chunks + chunks[-1:]
    elif kind == "empty":
        chunks = []
    return chunks


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("crc", "CRC32 mismatch"),
        ("order", "out of order"),
        ("truncated", "ended early"),
        ("round", "is for round 4 block 2"),
        ("shape", "needs 8428 bytes"),
        ("dtype", "unsupported dtype 'float64'"),
        ("duplicate", "sent twice"),
        ("empty", "empty stream"),
    ],
)
def test_malformed_streams_are_rejected(kind: str, message: str) -> None:
    with pytest.raises(TensorStreamError, match=message):
        from_chunks(corrupt(kind))


def test_total_size_is_bounded() -> None:
    with pytest.raises(TensorStreamError, match="exceeds the limit"):
        from_chunks(to_chunks(tensors()), max_total_bytes=1000)

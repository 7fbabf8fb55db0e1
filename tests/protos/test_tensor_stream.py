"""Chunked tensor streams round-trip and reject every malformed stream at the first bad chunk."""

from __future__ import annotations

import numpy as np
import pytest

from lola_deft.protos.deft.v1 import coordinator_pb2
from lola_deft.protos.tensor_stream import (
    FLOAT16_MAX,
    StreamTooLarge,
    TensorAssembler,
    TensorStreamError,
    from_chunks,
    to_chunks,
    upload_parts,
)


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.normal(size=(300, 7)).astype(np.float32),
        "b": np.zeros(0, np.float32),
        "c": rng.normal(size=5).astype(np.float32),
    }


EXPECTED = {name: value.shape for name, value in tensors().items()}


def test_round_trip_in_small_chunks() -> None:
    chunks = list(to_chunks(tensors(), chunk_bytes=1000))
    assert len(chunks) > 8 and all(len(c.data) <= 1000 for c in chunks)
    received = from_chunks(chunks, expected=EXPECTED)
    for name, value in tensors().items():
        assert np.array_equal(received[name], value)


@pytest.mark.parametrize(("dtype", "mantissa_bits"), [("float16", 10), ("bfloat16", 7)])
def test_half_precision_streams_carry_half_the_bytes(dtype: str, mantissa_bits: int) -> None:
    sent = tensors()
    chunks = list(to_chunks(sent, dtype=dtype))
    assert sum(len(c.data) for c in chunks) == sum(v.size for v in sent.values()) * 2
    received = from_chunks(chunks, expected=EXPECTED)
    for name, value in sent.items():
        assert received[name].dtype == np.float32
        # Round to nearest: within half a unit in the last place of the kept mantissa.
        np.testing.assert_allclose(received[name], value, rtol=2.0 ** -(mantissa_bits + 1))
        assert not np.array_equal(received[name], value) or value.size == 0


def test_half_precision_keeps_large_gradients_finite() -> None:
    huge = {"g": np.array([1e6, -3e38, 70000.0, 1.0], np.float32)}
    as_float16 = from_chunks(to_chunks(huge, dtype="float16"))["g"]
    assert as_float16.tolist() == [FLOAT16_MAX, -FLOAT16_MAX, FLOAT16_MAX, 1.0]
    as_bfloat16 = from_chunks(to_chunks(huge, dtype="bfloat16"))["g"]
    assert np.all(np.isfinite(as_bfloat16))
    np.testing.assert_allclose(as_bfloat16, huge["g"], rtol=2.0**-8)


def test_a_tensor_cannot_change_dtype_midway_or_declare_the_wrong_size() -> None:
    chunks = list(to_chunks(tensors(), chunk_bytes=1000, dtype="float16"))
    chunks[1].dtype = "float32"
    with pytest.raises(TensorStreamError, match="dtype changed mid-tensor"):
        from_chunks(chunks)
    chunks = list(to_chunks(tensors(), chunk_bytes=1000, dtype="float16"))
    chunks[0].dtype = "float32"  # 2 bytes per value sent, 4 declared: the size does not match
    with pytest.raises(TensorStreamError, match="needs 8400 bytes, header says 4200"):
        from_chunks(chunks)


def test_an_upload_is_its_header_then_the_chunks() -> None:
    header = coordinator_pb2.UploadHeader(session="s", round=3, block=2, compute_s=1.5)
    parts = list(upload_parts(header, tensors()))
    assert parts[0].WhichOneof("part") == "header" and parts[0].header == header
    assert {p.WhichOneof("part") for p in parts[1:]} == {"chunk"}
    assert set(from_chunks(p.chunk for p in parts[1:])) == set(EXPECTED)


def corrupt(kind: str) -> list[coordinator_pb2.TensorChunk]:
    chunks = list(to_chunks(tensors(), chunk_bytes=1000))
    if kind == "crc":
        chunks[1].data = bytes(len(chunks[1].data))
    elif kind == "order":
        chunks[0], chunks[1] = chunks[1], chunks[0]
    elif kind == "truncated":
        chunks = chunks[:3]
    elif kind == "shape":
        chunks[0].shape[:] = [301, 7]
    elif kind == "overflow":
        chunks[0].shape[:] = [65536] * 4  # 2^64 elements: must not wrap around
    elif kind == "dims":
        chunks[0].shape[:] = [1] * 9
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
        ("shape", "needs 8428 bytes"),
        ("overflow", "needs 73786976294838206464 bytes"),
        ("dims", "more than 8 dimensions"),
        ("dtype", "unsupported dtype 'float64'"),
        ("duplicate", "sent twice"),
        ("empty", "empty stream"),
    ],
)
def test_malformed_streams_are_rejected(kind: str, message: str) -> None:
    with pytest.raises(TensorStreamError, match=message) as caught:
        from_chunks(corrupt(kind))
    assert len(str(caught.value)) < 200


def test_errors_quote_client_names_briefly() -> None:
    chunks = list(to_chunks({"n" * 10_000: np.zeros(3, np.float32)}))
    with pytest.raises(TensorStreamError, match=r"\(10000 characters\)") as caught:
        from_chunks(chunks, expected=EXPECTED)
    assert len(str(caught.value)) < 200


def test_a_receiver_that_knows_the_tensors_accepts_nothing_else() -> None:
    with pytest.raises(TensorStreamError, match="unexpected tensor 'a'"):
        from_chunks(to_chunks(tensors()), expected={"c": (5,)})
    with pytest.raises(TensorStreamError, match=r"shape \[300, 7\], expected \[7, 300\]"):
        from_chunks(to_chunks(tensors()), expected={**EXPECTED, "a": (7, 300)})
    with pytest.raises(TensorStreamError, match="missing tensors"):
        from_chunks(to_chunks({"c": tensors()["c"]}), expected=EXPECTED)


def test_the_limit_is_checked_before_a_tensor_is_buffered() -> None:
    assembler = TensorAssembler(max_total_bytes=1000)
    first = next(to_chunks({"big": np.zeros(10_000, np.float32)}, chunk_bytes=100))
    with pytest.raises(StreamTooLarge, match="exceeds the limit of 1000 bytes"):
        assembler.feed(first)
    assert assembler.total_bytes == 0 and assembler.tensors == {}

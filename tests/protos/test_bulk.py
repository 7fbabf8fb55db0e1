"""The data port's framing on a socket pair: tensors arrive whole and checked, or not at all."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from lola_deft.protos.bulk import (
    MAX_FRAME_BYTES,
    BulkProtocolError,
    Deadline,
    PeerClosed,
    receive_tensors,
    recv_frame,
    send_frame,
    send_tensors,
)
from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.tensor_stream import StreamTooLarge, TensorAssembler, TensorStreamError


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    with left, right:
        yield left, right


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.normal(size=(3, 5)).astype(np.float32),
        "b": rng.normal(size=(70000,)).astype(np.float32),  # larger than a socket buffer
        "scalar": np.array(2.5, np.float32),
    }


def send_in_background(sock: socket.socket, payload: dict[str, np.ndarray], dtype: str) -> None:
    thread = threading.Thread(target=send_tensors, args=(sock, payload, Deadline(10), dtype))
    thread.start()
    return thread  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_tensors_arrive_as_sent(pair: tuple[socket.socket, socket.socket], dtype: str) -> None:
    sent = tensors()
    thread = send_in_background(pair[0], sent, dtype)
    shapes = {name: value.shape for name, value in sent.items()}
    assembler = TensorAssembler(shapes, 1 << 20)
    received = receive_tensors(pair[1], assembler, Deadline(10))
    thread.join()  # type: ignore[attr-defined]
    assert set(received) == set(sent)
    tolerance = {"float32": 0, "float16": 1e-3, "bfloat16": 1e-2}[dtype]
    for name, value in sent.items():
        assert received[name].dtype == np.float32 and received[name].shape == value.shape
        np.testing.assert_allclose(received[name], value, rtol=tolerance, atol=tolerance)
    assert assembler.total_bytes == sum(v.size for v in sent.values()) * (
        4 if dtype == "float32" else 2
    )


def header_frame(**fields: object) -> bytes:
    payload = pb.TensorChunk(**fields).SerializeToString()  # type: ignore[arg-type]
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize(
    ("frames", "error", "message"),
    [
        (
            header_frame(name="a", shape=[3, 5], dtype="float32", total_bytes=60, data=b"x"),
            BulkProtocolError,
            "no data",
        ),
        (
            header_frame(name="zz", shape=[1], dtype="float32", total_bytes=4),
            TensorStreamError,
            "unexpected tensor",
        ),
        (
            header_frame(name="a", shape=[3, 5], dtype="float64", total_bytes=120),
            TensorStreamError,
            "unsupported dtype",
        ),
        (
            header_frame(name="a", shape=[3, 5], dtype="float32", total_bytes=61),
            TensorStreamError,
            "needs 60 bytes",
        ),
        (
            header_frame(name="a", shape=[65536] * 4, dtype="float32", total_bytes=2**64 - 1),
            TensorStreamError,
            "shape",
        ),
        (struct.pack(">I", MAX_FRAME_BYTES + 1), BulkProtocolError, "exceeds"),
        (struct.pack(">I", 5) + b"\xff" * 5, BulkProtocolError, "not a tensor header"),
        (b"", TensorStreamError, "missing tensors"),
    ],
)
def test_a_bad_stream_is_refused_at_its_first_wrong_frame(
    pair: tuple[socket.socket, socket.socket], frames: bytes, error: type, message: str
) -> None:
    pair[0].sendall(frames + struct.pack(">I", 0))
    with pytest.raises(error, match=message):
        receive_tensors(pair[1], TensorAssembler({"a": (3, 5)}, 1 << 20), Deadline(5))


def test_the_total_is_bounded_before_a_byte_is_buffered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    pair[0].sendall(header_frame(name="a", shape=[1000], dtype="float32", total_bytes=4000))
    with pytest.raises(StreamTooLarge):
        receive_tensors(pair[1], TensorAssembler(None, 1000), Deadline(5))


def test_a_peer_that_leaves_mid_tensor_is_told_apart(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    pair[0].sendall(
        header_frame(name="a", shape=[3, 5], dtype="float32", total_bytes=60) + b"\0" * 8
    )
    pair[0].shutdown(socket.SHUT_WR)
    with pytest.raises(PeerClosed, match="after 8 of 60"):
        receive_tensors(pair[1], TensorAssembler({"a": (3, 5)}, 1 << 20), Deadline(5))


def test_a_silent_peer_runs_into_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    send_frame(pair[0], b"abc"[:2])  # a frame promised, never ended: 2 of 2 bytes then silence
    assert recv_frame(pair[1], Deadline(5)) == b"ab"
    with pytest.raises(TimeoutError):
        recv_frame(pair[1], Deadline(0.2))
    with pytest.raises(TimeoutError, match="deadline passed"):
        Deadline(-1).arm(pair[1])

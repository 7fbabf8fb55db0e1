"""The data port's wire format: tensors as the bytes they are in memory, framed and bounded.

gRPC streams in Python reach a third of what the same loopback socket carries (measured in
`make bench`): every 1 MiB chunk becomes a protobuf message that is built, serialized, parsed and
copied on each side. On the data port a tensor is one small header frame followed by its raw
bytes: the sender hands the kernel the array's own memory and the receiver reads straight into
the buffer that becomes the array, so the bytes are copied only by the kernel (and TLS).

The receiver keeps every check of the chunk streams (TensorAssembler: names, shapes, dtypes,
exact sizes, a total bounded before a byte is buffered), reads with a deadline, and refuses a
frame over MAX_FRAME_BYTES before reading it. No per-tensor CRC32 here: on a TLS link every
record is authenticated (far stronger than a CRC, which costs as much as the copy itself), and
plaintext links (--insecure, trusted networks only) rely on TCP's checksum as gRPC itself does.
The protocol is in coordinator.proto, above BulkOpen.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from lola_deft.protos.deft.v1 import coordinator_pb2
from lola_deft.protos.tensor_stream import TensorAssembler, TensorStreamError, to_wire

MAGIC = b"DEFTDATA"
MAX_FRAME_BYTES = 64 * 1024
# sendall's timeout bounds the whole call: pieces this large keep a slow link (1 Mbit/s: 34 s a
# piece) within the idle bound while costing nothing on a fast one.
SEND_PIECE_BYTES = 4 * 1024 * 1024
_LENGTH = struct.Struct(">I")
M = TypeVar("M", bound=Message)


class BulkProtocolError(TensorStreamError):
    """The other side broke the data port's protocol (or closed the connection mid-transfer)."""


class PeerClosed(BulkProtocolError):
    """The connection ended in the middle of a frame or a tensor."""


class Deadline:
    """Bounds a whole transfer: each socket wait gets what is left of it (and at most `idle_s`,
    so a peer that stops sending is dropped even when the deadline is far)."""

    def __init__(self, seconds: float, idle_s: float = 60.0) -> None:
        self.at = time.monotonic() + seconds
        self.idle_s = idle_s

    def arm(self, sock: socket.socket) -> None:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the transfer's deadline passed")
        sock.settimeout(min(remaining, self.idle_s))


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def send_message(sock: socket.socket, message: Message) -> None:
    send_frame(sock, message.SerializeToString())


def recv_into_exactly(sock: socket.socket, view: memoryview, deadline: Deadline) -> None:
    """Fill `view` from the socket, or raise: BulkProtocolError when the peer closes early,
    TimeoutError when the deadline passes."""
    filled = 0
    while filled < len(view):
        deadline.arm(sock)
        count = sock.recv_into(view[filled:])
        if count == 0:
            raise PeerClosed(f"connection closed after {filled} of {len(view)} expected bytes")
        filled += count


def recv_frame(sock: socket.socket, deadline: Deadline) -> bytes:
    header = bytearray(_LENGTH.size)
    recv_into_exactly(sock, memoryview(header), deadline)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise BulkProtocolError(f"a frame of {length} bytes exceeds the {MAX_FRAME_BYTES} allowed")
    payload = bytearray(length)
    recv_into_exactly(sock, memoryview(payload), deadline)
    return bytes(payload)


def recv_message(sock: socket.socket, kind: type[M], deadline: Deadline) -> M:
    message = kind()
    try:
        message.ParseFromString(recv_frame(sock, deadline))
    except DecodeError:
        raise BulkProtocolError(f"a frame that is not a {kind.__name__}") from None
    return message


def answered(sock: socket.socket) -> bool:
    """Whether the peer has already said something (a refusal mid-stream), without waiting."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def linger(sock: socket.socket, seconds: float, max_bytes: int) -> None:
    """After answering a stream early: say we are done, then read and drop what the peer still
    sends (bounded), so our close does not reset the connection before the answer is read."""
    try:
        sock.shutdown(socket.SHUT_WR)
        scratch = memoryview(bytearray(1 << 16))
        until, dropped = time.monotonic() + seconds, 0
        while dropped < max_bytes and (left := until - time.monotonic()) > 0:
            sock.settimeout(left)
            count = sock.recv_into(scratch)
            if count == 0:
                return
            dropped += count
    except (OSError, ValueError):
        return


def send_tensors(
    sock: socket.socket,
    tensors: Mapping[str, np.ndarray],
    deadline: Deadline,
    dtype: str = "float32",
) -> int:
    """Send every tensor (header frame, then its bytes from its own memory) and the end frame;
    returns the tensor bytes sent. Stops early, without the end frame, when the receiver has
    answered meanwhile (it refused the stream): the caller reads that answer next."""
    sent = 0
    for name, value in tensors.items():
        if answered(sock):
            return sent
        deadline.arm(sock)
        array = to_wire(value, dtype)
        header = coordinator_pb2.TensorChunk(
            name=name, shape=list(array.shape), dtype=dtype, total_bytes=array.nbytes
        )
        send_message(sock, header)
        data = memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        for offset in range(0, len(data), SEND_PIECE_BYTES):  # a timeout bounds each piece
            if offset and answered(sock):
                return sent
            deadline.arm(sock)
            sock.sendall(data[offset : offset + SEND_PIECE_BYTES])
        sent += array.nbytes
    send_frame(sock, b"")
    return sent


def receive_tensors(
    sock: socket.socket, assembler: TensorAssembler, deadline: Deadline
) -> dict[str, np.ndarray]:
    """Read tensors until the end frame, each checked by `assembler` before its bytes are read."""
    while True:
        frame = recv_frame(sock, deadline)
        if not frame:
            return assembler.finish()
        header = coordinator_pb2.TensorChunk()
        try:
            header.ParseFromString(frame)
        except DecodeError:
            raise BulkProtocolError("a frame that is not a tensor header") from None
        if header.data or header.offset:
            raise BulkProtocolError("a tensor header must carry no data and offset 0")
        buffer = bytearray(assembler.begin(header))
        recv_into_exactly(sock, memoryview(buffer), deadline)
        assembler.complete(buffer)

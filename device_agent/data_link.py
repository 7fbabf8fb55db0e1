"""The agent's side of the coordinator's data port: one connection per download or upload.

A refusal arrives as the gRPC status the same call would have ended with, raised as
TransferRefused (a grpc.RpcError), so the agent's handling of round-level and retryable errors
is one and the same for both paths. A data port that cannot be reached at all raises
DataPortUnreachable before anything was sent, and the connection falls back to gRPC.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import grpc
import numpy as np

from lola_deft.protos.bulk import (
    MAGIC,
    BulkProtocolError,
    Deadline,
    receive_tensors,
    recv_message,
    send_message,
    send_tensors,
)
from lola_deft.protos.credentials import TlsFiles
from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.tensor_stream import DEFAULT_MAX_TOTAL_BYTES, TensorAssembler

CODES = {code.value[0]: code for code in grpc.StatusCode}
CONNECT_TIMEOUT_S = 10.0


class TransferRefused(grpc.RpcError):
    """The coordinator's answer on the data port, shaped like a failed gRPC call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class DataPortUnreachable(OSError):
    """No data-port connection could be opened; nothing of the transfer was sent."""


def split_host(address: str) -> str:
    """The host of a gRPC target ("host:port", "[v6]:port", "dns:///host:port")."""
    target = address.split("///", 1)[-1]
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]" in target else target
    return host.strip("[]")


class DataLink:
    def __init__(self, host: str, port: int, tls: TlsFiles) -> None:
        self.host = host
        self.port = port
        self._tls = tls.client_ssl_context()

    def _open(
        self, request: pb.BulkOpen, deadline: Deadline
    ) -> tuple[socket.socket, pb.BulkStatus]:
        """Connect, send the opening and read the go-ahead (or raise the refusal)."""
        try:
            raw = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as error:
            raise DataPortUnreachable(
                f"data port {self.host}:{self.port}: {error.strerror or error}"
            ) from error
        sock: socket.socket = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(raw, server_hostname=self.host)
            sock.sendall(MAGIC)
            send_message(sock, request)
            status = recv_message(sock, pb.BulkStatus, deadline)
        except (OSError, BulkProtocolError) as error:  # TLS refused, or not a data port
            sock.close()
            raise DataPortUnreachable(f"data port {self.host}:{self.port}: {error}") from error
        try:
            self._check(status)
        except TransferRefused:
            sock.close()
            raise
        return sock, status

    @staticmethod
    def _check(status: pb.BulkStatus) -> None:
        if status.code:
            raise TransferRefused(CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.details)

    def download(self, request: pb.WeightsRequest, timeout_s: float) -> dict[str, np.ndarray]:
        deadline = Deadline(timeout_s)
        try:
            sock, _ = self._open(pb.BulkOpen(download=request), deadline)
            with sock:
                assembler = TensorAssembler(None, DEFAULT_MAX_TOTAL_BYTES)
                return receive_tensors(sock, assembler, deadline)
        except DataPortUnreachable:
            raise
        except (BulkProtocolError, OSError) as error:
            raise _broken("download", error) from error

    def upload(
        self,
        header: pb.UploadHeader,
        tensors: Mapping[str, np.ndarray],
        timeout_s: float,
        dtype: str = "float32",
    ) -> pb.UploadAck:
        deadline = Deadline(timeout_s)
        try:
            sock, status = self._open(pb.BulkOpen(upload=header), deadline)
            with sock:
                if status.HasField("ack"):  # a retry of an upload already taken
                    return status.ack
                send_tensors(sock, tensors, deadline, dtype)
                final = recv_message(sock, pb.BulkStatus, deadline)
                self._check(final)
                return final.ack
        except DataPortUnreachable:
            raise
        except (BulkProtocolError, OSError) as error:
            raise _broken("upload", error) from error


def _broken(what: str, error: Exception) -> TransferRefused:
    """A transfer cut off midway: UNAVAILABLE, as a broken gRPC stream would end."""
    return TransferRefused(grpc.StatusCode.UNAVAILABLE, f"data port {what} broke: {error}")

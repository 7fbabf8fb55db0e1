"""The coordinator's data port: weight downloads and gradient uploads at the speed of the wire.

The same transfers as DownloadWeights and UploadGradient, with the same authentication (session
and, under mutual TLS, the certificate's device), the same checks and the same answers (a gRPC
status code and its message), over plain sockets that carry tensors as raw bytes (see
lola_deft.protos.bulk for why). Each connection is served on a thread of its own, so the
coordinator's event loop never waits on a socket; the coordinator's state is touched only on its
loop. Bounded: at most `max_transfers` connections at once (the rest wait in the kernel's
backlog), the opening must arrive within OPENING_TIMEOUT_S, frames and tensors are bounded, and
every transfer ends at its round's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

from lola_deft.protos.bulk import (
    MAGIC,
    BulkProtocolError,
    Deadline,
    PeerClosed,
    linger,
    receive_tensors,
    recv_into_exactly,
    recv_message,
    send_message,
    send_tensors,
)
from lola_deft.protos.credentials import TlsFiles
from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.identity import Peer, peer_of_socket
from lola_deft.protos.tensor_stream import TensorAssembler, TensorStreamError
from lola_deft.server import wire
from lola_deft.server.errors import CoordinatorError, DeadlinePassed, InvalidRequest
from lola_deft.server.messages import UploadAck, UploadHeader, UploadPlan
from lola_deft.server.metrics import CoordinatorMetrics
from lola_deft.server.service_status import reason, status_of

log = logging.getLogger("deft.coordinator")
T = TypeVar("T")

OPENING_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
LINGER_S = 2.0


class Transfers(Protocol):
    """What the data port asks of the coordinator (lola_deft.server.coordinator.Coordinator)."""

    def weights(
        self, session: str, round_number: int, peer: Peer
    ) -> tuple[dict[str, np.ndarray], float]: ...

    def open_upload(self, header: UploadHeader, peer: Peer) -> UploadPlan: ...

    def finish_upload(
        self,
        plan: UploadPlan,
        header: UploadHeader,
        tensors: dict[str, np.ndarray],
        upload_s: float,
        wire_bytes: int | None = None,
    ) -> UploadAck: ...

    def abandon_upload(
        self, plan: UploadPlan, header: UploadHeader, kind: str, reason: str
    ) -> None: ...


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on the gRPC host's address (both IPv4 and IPv6 for "all")."""
    bare = host.strip("[]")
    try:
        if bare in ("", "::") and socket.has_dualstack_ipv6():
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, backlog=512, dualstack_ipv6=True
            )
        return socket.create_server(("0.0.0.0" if bare in ("", "::") else bare, port), backlog=512)
    except OSError as error:
        raise OSError(
            f"cannot bind the data port to {host}:{port} ({error.strerror or error})"
        ) from error


class DataPort:
    def __init__(
        self,
        listener: socket.socket,
        tls: TlsFiles,
        coordinator: Transfers,
        metrics: CoordinatorMetrics,
        loop: asyncio.AbstractEventLoop,
        max_transfers: int = 64,
    ) -> None:
        self.listener = listener
        self.port: int = listener.getsockname()[1]
        self._tls = tls.server_ssl_context()
        self.coordinator = coordinator
        self.metrics = metrics
        self.loop = loop
        self._slots = threading.BoundedSemaphore(max_transfers)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="data-port", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self.listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stopped.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                connection, _ = self.listener.accept()
            except (TimeoutError, OSError):
                self._slots.release()
                continue
            threading.Thread(
                target=self._serve, args=(connection,), name="data-transfer", daemon=True
            ).start()

    def _serve(self, connection: socket.socket) -> None:
        sock: socket.socket = connection
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            opening = Deadline(OPENING_TIMEOUT_S)
            opening.arm(connection)
            if self._tls is not None:
                sock = self._tls.wrap_socket(connection, server_side=True)
            magic = bytearray(len(MAGIC))
            recv_into_exactly(sock, memoryview(magic), opening)
            if magic != MAGIC:
                raise BulkProtocolError("not a LoLa-DEFT data port client")
            request = recv_message(sock, pb.BulkOpen, opening)
            peer = peer_of_socket(sock)
            which = request.WhichOneof("transfer")
            if which == "upload":
                self._upload(sock, request.upload, peer)
            elif which == "download":
                self._download(sock, request.download, peer)
            else:
                self._refuse(sock, InvalidRequest("data port", "BulkOpen names no transfer"))
        except BulkProtocolError as error:
            self._count(InvalidRequest("data port", str(error)))
            log.debug("data port: dropped a connection: %s", error)
        except (OSError, ssl.SSLError, RuntimeError) as error:  # RuntimeError: loop closed
            log.debug("data port: connection ended: %s", error)
        finally:
            sock.close()
            self._slots.release()

    def _on_loop(self, function: Callable[[], T]) -> T:
        """Run `function` on the coordinator's loop, where its state lives."""

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def _count(self, error: CoordinatorError) -> None:
        self.metrics.rejected.labels(reason(error)).inc()

    def _refuse(self, sock: socket.socket, error: CoordinatorError) -> None:
        self._count(error)
        send_message(sock, pb.BulkStatus(code=status_of(error).value[0], details=str(error)))

    def _download(self, sock: socket.socket, request: pb.WeightsRequest, peer: Peer) -> None:
        try:
            weights, deadline_at = self._on_loop(
                lambda: self.coordinator.weights(request.session, request.round, peer)
            )
        except CoordinatorError as error:
            self._refuse(sock, error)
            return
        send_message(sock, pb.BulkStatus())
        deadline = Deadline(deadline_at - time.monotonic(), IDLE_TIMEOUT_S)
        try:
            sent = send_tensors(sock, weights, deadline)
        except TimeoutError:
            self._count(DeadlinePassed("the round's deadline passed"))
            raise
        self.metrics.bytes.labels("down").inc(sent)

    def _upload(self, sock: socket.socket, message: pb.UploadHeader, peer: Peer) -> None:
        """wire.receive_upload's steps, on a socket: plan, go-ahead, bounded tensors, answer."""
        header = wire.upload_header(message)
        try:
            plan = self._on_loop(lambda: self.coordinator.open_upload(header, peer))
        except CoordinatorError as error:
            self._refuse(sock, error)
            return
        if plan.duplicate:  # a retry of an upload already taken: acknowledged, nothing read
            ack = UploadAck(header.round, plan.block, plan.received_bytes, duplicate=True)
            send_message(sock, pb.BulkStatus(ack=wire.ack_message(ack)))
            return
        send_message(sock, pb.BulkStatus())
        started = time.perf_counter()
        assembler = TensorAssembler(plan.shapes, plan.max_bytes)
        failure: tuple[str, str] | None = wire.BROKEN
        refusal: CoordinatorError | None = None
        try:
            deadline = Deadline(plan.deadline - time.monotonic(), IDLE_TIMEOUT_S)
            tensors = receive_tensors(sock, assembler, deadline)
            elapsed = time.perf_counter() - started
            ack = self._on_loop(
                lambda: self.coordinator.finish_upload(
                    plan, header, tensors, elapsed, assembler.total_bytes
                )
            )
            failure = None
        except TimeoutError:
            if time.monotonic() >= plan.deadline:
                failure, refusal = wire.LATE, wire.late_upload(header)
        except PeerClosed:
            pass  # broken: nobody is left to answer
        except TensorStreamError as error:
            refusal = wire.stream_refusal(error, plan.block)
        except CoordinatorError as error:
            refusal = error
        finally:  # anything but acceptance ends the device's hold on the block
            if refusal is not None and failure is wire.BROKEN:
                failure = ("refused", f"refused: {refusal}")
            if failure is not None:
                self._on_loop(lambda: self.coordinator.abandon_upload(plan, header, *failure))
        if refusal is not None:
            self._refuse(sock, refusal)
            linger(sock, LINGER_S, plan.max_bytes)  # the uploader may still be sending
        elif failure is None:
            self.metrics.bytes.labels("up").inc(ack.received_bytes)
            send_message(sock, pb.BulkStatus(ack=wire.ack_message(ack)))

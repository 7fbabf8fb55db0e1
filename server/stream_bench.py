"""Part 3 of `make bench`: how close weights and gradients travel to the wire's own speed.

One payload (4 float32 tensors, 64 MiB in all) goes, in turn within each repeat so that the
machine's noise hits every path alike, over:
- a raw loopback TCP socket (sendall / recv; the yardstick);
- the coordinator's data port (lola_deft.server.data_port, the real server code with a stand-in
  for the coordinator's state), as an upload and as a download, plaintext and mutual TLS;
- the gRPC calls (UploadGradient / DownloadWeights streams of 1 MiB chunks), the fallback path.
Rates are medians over the repeats after one warm-up.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import grpc
import numpy as np

from lola_deft.device_agent.data_link import DataLink
from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, add_port, open_channel
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.protos.grpc_options import message_size_options
from lola_deft.protos.identity import Peer
from lola_deft.protos.tensor_stream import from_chunks, to_chunks, upload_parts
from lola_deft.server.data_port import DataPort, listen
from lola_deft.server.messages import UploadAck, UploadHeader, UploadPlan
from lola_deft.server.metrics import CoordinatorMetrics

MiB = 2**20


class _Transfers:
    """The coordinator's side of a transfer, minus its state: every upload of the bench's
    tensors is accepted (after the same checks), every download serves them."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.shapes = {name: value.shape for name, value in tensors.items()}

    def weights(
        self, session: str, round_number: int, peer: Peer
    ) -> tuple[dict[str, np.ndarray], float]:
        return self.tensors, time.monotonic() + 600

    def open_upload(self, header: UploadHeader, peer: Peer) -> UploadPlan:
        return UploadPlan("bench", 1, self.shapes, deadline=time.monotonic() + 600)

    def finish_upload(
        self,
        plan: UploadPlan,
        header: UploadHeader,
        tensors: dict[str, np.ndarray],
        upload_s: float,
        wire_bytes: int | None = None,
    ) -> UploadAck:
        return UploadAck(header.round, plan.block, wire_bytes or 0, False)

    def abandon_upload(
        self, plan: UploadPlan, header: UploadHeader, kind: str, reason: str
    ) -> None:
        raise AssertionError(f"a bench upload failed: {reason}")


@contextmanager
def _data_port(tensors: dict[str, np.ndarray], tls: TlsFiles) -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = DataPort(listen("127.0.0.1", 0), tls, _Transfers(tensors), CoordinatorMetrics(), loop)
    port.start()
    try:
        yield port.port
    finally:
        port.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class _GrpcSink(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors

    def UploadGradient(
        self,
        request_iterator: Iterator[coordinator_pb2.GradientPart],
        context: grpc.ServicerContext,
    ) -> coordinator_pb2.UploadAck:
        tensors = from_chunks(part.chunk for part in request_iterator if part.HasField("chunk"))
        return coordinator_pb2.UploadAck(received_bytes=sum(t.nbytes for t in tensors.values()))

    def DownloadWeights(
        self, request: coordinator_pb2.WeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[coordinator_pb2.TensorChunk]:
        return to_chunks(self.tensors)


@contextmanager
def _grpc_server(tensors: dict[str, np.ndarray], tls: TlsFiles) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(4), options=message_size_options())
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(_GrpcSink(tensors), server)
    port = add_port(server, "127.0.0.1:0", tls)
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def _raw_loopback(payload: bytes, tls: tuple[ssl.SSLContext, ssl.SSLContext] | None) -> None:
    """The yardstick: `payload` through one socket (TLS with the data port's own contexts)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = bytearray()

    def serve() -> None:
        accepted, _ = listener.accept()
        connection = tls[0].wrap_socket(accepted, server_side=True) if tls else accepted
        with connection:
            while len(received) < len(payload):
                piece = connection.recv(1 << 20)
                if not piece:
                    break
                received.extend(piece)
            connection.sendall(b"k")

    thread = threading.Thread(target=serve)
    thread.start()
    plain = socket.create_connection(listener.getsockname())
    with tls[1].wrap_socket(plain, server_hostname="localhost") if tls else plain as client:
        client.sendall(payload)
        if not tls:
            client.shutdown(socket.SHUT_WR)  # (TLS: the server reads exactly len(payload))
        client.recv(1)
    thread.join()
    listener.close()
    assert len(received) == len(payload)


def _grpc_upload(
    stub: coordinator_pb2_grpc.CoordinatorStub,
    header: coordinator_pb2.UploadHeader,
    tensors: dict[str, np.ndarray],
) -> coordinator_pb2.UploadAck:
    return stub.UploadGradient(upload_parts(header, tensors), timeout=60)


def _grpc_download(
    stub: coordinator_pb2_grpc.CoordinatorStub, request: coordinator_pb2.WeightsRequest
) -> dict[str, np.ndarray]:
    return from_chunks(stub.DownloadWeights(request, timeout=60))


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_streaming(total_bytes: int, repeats: int) -> dict[str, float]:
    tensors = {
        f"t{i}": np.random.default_rng(i).normal(size=total_bytes // 16).astype(np.float32)
        for i in range(4)
    }
    payload = b"".join(t.tobytes() for t in tensors.values())
    header = coordinator_pb2.UploadHeader(session="bench", round=1, block=1)
    request = coordinator_pb2.WeightsRequest(session="bench", round=1)
    with tempfile.TemporaryDirectory() as folder:
        from lola_deft.server.pki import init_folder

        certs = Path(folder)
        init_folder(certs, devices=["bench"])
        device = certs / "devices" / "bench.pem"
        server_tls = TlsFiles(
            certs / "coordinator.pem", certs / "coordinator.key", certs / "ca.pem"
        )
        client_tls = TlsFiles(device, device.with_suffix(".key"), certs / "ca.pem")
        with (
            _data_port(tensors, PLAINTEXT) as plain_port,
            _data_port(tensors, server_tls) as tls_port,
            _grpc_server(tensors, PLAINTEXT) as grpc_port,
            _grpc_server(tensors, server_tls) as grpc_tls_port,
            open_channel(f"localhost:{grpc_port}", PLAINTEXT, message_size_options()) as plain,
            open_channel(f"localhost:{grpc_tls_port}", client_tls, message_size_options()) as tls,
        ):
            links = {
                "": DataLink("127.0.0.1", plain_port, PLAINTEXT),
                "tls_": DataLink("localhost", tls_port, client_tls),
            }
            stubs = {
                "": coordinator_pb2_grpc.CoordinatorStub(plain),
                "tls_": coordinator_pb2_grpc.CoordinatorStub(tls),
            }
            server_context = server_tls.server_ssl_context()
            client_context = client_tls.client_ssl_context()
            assert server_context is not None and client_context is not None
            contexts = (server_context, client_context)
            paths: dict[str, Callable[[], object]] = {
                "raw": partial(_raw_loopback, payload, None),
                "tls_raw": partial(_raw_loopback, payload, contexts),
            }
            for prefix, link in links.items():
                paths[f"{prefix}data_up"] = partial(link.upload, header, tensors, 60)
                paths[f"{prefix}data_down"] = partial(link.download, request, 60)
            for prefix, stub in stubs.items():
                paths[f"{prefix}grpc_up"] = partial(_grpc_upload, stub, header, tensors)
                paths[f"{prefix}grpc_down"] = partial(_grpc_download, stub, request)
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(repeats + 1):
                for name, action in paths.items():
                    times[name].append(_timed(action))
    rates = {name: total_bytes / statistics.median(seconds[1:]) for name, seconds in times.items()}
    result: dict[str, float] = {"bytes": total_bytes}
    result.update({f"{name}_MiB_per_s": rate / MiB for name, rate in rates.items()})
    slowest_data = min(rates["data_up"], rates["data_down"])
    slowest_tls = min(rates["tls_data_up"], rates["tls_data_down"])
    result["ratio"] = slowest_data / rates["raw"]
    result["tls_wire_ratio"] = slowest_tls / rates["tls_raw"]
    result["tls_ratio"] = slowest_tls / slowest_data
    result["tls_socket_ratio"] = rates["tls_raw"] / rates["raw"]
    result["grpc_ratio"] = min(rates["grpc_up"], rates["grpc_down"]) / rates["raw"]
    return result


def print_streaming(result: dict[str, float]) -> None:
    r = result
    print(
        f"\n(3) streaming {r['bytes'] / MiB:.0f} MiB, MiB/s (up / down):\n"
        f"  plaintext: raw loopback TCP {r['raw_MiB_per_s']:.0f}; data port "
        f"{r['data_up_MiB_per_s']:.0f} / {r['data_down_MiB_per_s']:.0f} ({r['ratio']:.2f}x of "
        f"raw); gRPC chunks (the fallback) {r['grpc_up_MiB_per_s']:.0f} / "
        f"{r['grpc_down_MiB_per_s']:.0f} ({r['grpc_ratio']:.2f}x)\n"
        f"  mutual TLS: raw TLS socket {r['tls_raw_MiB_per_s']:.0f} ({r['tls_socket_ratio']:.2f}x "
        f"of raw TCP: the cipher's cost here); data port {r['tls_data_up_MiB_per_s']:.0f} / "
        f"{r['tls_data_down_MiB_per_s']:.0f} ({r['tls_wire_ratio']:.2f}x of the raw TLS socket, "
        f"{r['tls_ratio']:.2f}x of plaintext); gRPC chunks {r['tls_grpc_up_MiB_per_s']:.0f} / "
        f"{r['tls_grpc_down_MiB_per_s']:.0f}"
    )


def streaming_targets(result: dict[str, float]) -> list[str]:
    ratio, tls = result["ratio"], result["tls_wire_ratio"]
    return [
        f"{'PASS' if ratio >= 0.8 else 'FAIL'} weights and gradients over the data port at "
        f"{ratio:.2f}x of raw loopback TCP, the slower of upload and download (target >= 0.8x)",
        f"{'PASS' if tls >= 0.8 else 'FAIL'} over mutual TLS at {tls:.2f}x of a raw TLS socket "
        "with the same certificates (target >= 0.8x)",
    ]

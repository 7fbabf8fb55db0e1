"""The data port: the same transfers, checks and answers as the gRPC calls, over raw sockets.

The coordinator runs in this process on loopback; the test plays the agents with the agent's own
DataLink, and plays hostile clients with bare sockets.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from lola_deft.device_agent.connection import CoordinatorConnection
from lola_deft.device_agent.data_link import DataLink, DataPortUnreachable, TransferRefused
from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.bulk import MAGIC, MAX_FRAME_BYTES
from lola_deft.protos.credentials import PLAINTEXT
from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.deft.v1 import coordinator_pb2_grpc
from lola_deft.protos.grpc_options import COORDINATOR_MAX_MESSAGE_BYTES
from lola_deft.server import data_port
from lola_deft.server.service import RunningCoordinator
from tests.helpers import eventually
from tests.server.one_round import PlayedAgent, gradient, one_round_coordinator, start_round


@pytest.fixture
def link(coordinator: RunningCoordinator) -> DataLink:
    assert coordinator.data_port
    return DataLink("127.0.0.1", coordinator.data_port, PLAINTEXT)


def upload(
    link: DataLink,
    agent: PlayedAgent,
    tensors: dict[str, np.ndarray],
    *,
    round_number: int = 1,
    dtype: str = "float32",
) -> pb.UploadAck:
    block = agent.instruction.block  # type: ignore[union-attr]
    header = pb.UploadHeader(session=agent.session, round=round_number, block=block)
    return link.upload(header, tensors, timeout_s=30, dtype=dtype)


def refused(call: object) -> TransferRefused:
    with pytest.raises(TransferRefused) as caught:
        call()  # type: ignore[operator]
    return caught.value


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def hostile(coordinator: RunningCoordinator, *pieces: bytes) -> bytes:
    """Send `pieces` on a fresh connection, then whatever the coordinator answers, until EOF."""
    with socket.create_connection(("127.0.0.1", coordinator.data_port or 0), timeout=20) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break  # dropped mid-way: that is an answer too
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def status_in(answer: bytes) -> pb.BulkStatus:
    (length,) = struct.unpack(">I", answer[:4])
    return pb.BulkStatus.FromString(answer[4 : 4 + length])


def test_registration_announces_the_data_port(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    tiny_model_dir: Path,
) -> None:
    welcome = stub.Register(
        pb.RegisterRequest(device_id="probe", model_fingerprint=model_fingerprint(tiny_model_dir)),
        timeout=10,
    )
    assert welcome.data_port == coordinator.data_port and welcome.data_port != coordinator.port


def test_a_round_over_the_data_port_trains_exactly_like_grpc(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    link: DataLink,
    tiny_model_dir: Path,
) -> None:
    agents = start_round(stub, tiny_model_dir)
    first = agents[0]
    weights = link.download(pb.WeightsRequest(session=first.session, round=1), timeout_s=30)
    expected = coordinator.engine.current.weights  # type: ignore[union-attr]
    assert set(weights) == set(expected)
    assert all(np.array_equal(weights[name], expected[name]) for name in expected)
    collector = coordinator.engine.current.collector  # type: ignore[union-attr]
    good = gradient(coordinator, first, weights)

    cases = [
        (lambda: upload(link, first, good, round_number=2), "FAILED_PRECONDITION", "not running"),
        (
            lambda: upload(link, PlayedAgent("ghost", "made-up", first.instruction), good),
            "NOT_FOUND",
            "unknown session",
        ),
        (
            lambda: link.download(pb.WeightsRequest(session=first.session, round=7), 10),
            "FAILED_PRECONDITION",
            "round 7 is not running",
        ),
        (
            lambda: upload(link, first, {**good, next(iter(good)): np.zeros((1, 2), np.float32)}),
            "INVALID_ARGUMENT",
            "shape [1, 2], expected",
        ),
    ]
    for call, code, message in cases:
        error = refused(call)
        assert error.code().name == code and message in error.details(), error.details()
        assert collector.uploads == {}
        if code == "INVALID_ARGUMENT":  # a refused gradient ends the device's hold (as on gRPC)
            break

    before = coordinator.trainer.snapshot()
    for agent in agents[1:]:
        ack = upload(link, agent, gradient(coordinator, agent, weights))
        assert not ack.duplicate and ack.received_bytes == sum(
            value.nbytes for value in gradient(coordinator, agent, weights).values()
        )
        assert upload(link, agent, gradient(coordinator, agent, weights)).duplicate
    assert coordinator.engine.finished.wait(60)
    after = coordinator.trainer.snapshot()
    step = coordinator.engine.config.learning_rate  # one Adam step from zero moments
    moved = set(coordinator.engine.history.rounds[-1].blocks_updated)
    assert moved == {agent.instruction.block for agent in agents[1:]}  # type: ignore[union-attr]
    for name in coordinator.trainer.head_names:
        np.testing.assert_allclose(after[name], before[name] - step, rtol=0, atol=1e-6)


def test_half_precision_over_the_data_port(tiny_model_dir: Path, tmp_path: Path) -> None:
    with (
        one_round_coordinator(tiny_model_dir, tmp_path, upload_dtype="float16") as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        agents = start_round(coordinator_pb2_grpc.CoordinatorStub(channel), tiny_model_dir)
        link = DataLink("127.0.0.1", running.data_port or 0, PLAINTEXT)
        weights = running.engine.current.weights  # type: ignore[union-attr]
        for agent in agents:
            tensors = gradient(running, agent, weights)
            ack = upload(link, agent, tensors, dtype="float16")
            assert ack.received_bytes == sum(t.size for t in tensors.values()) * 2
        assert running.engine.finished.wait(60)
        assert sorted(running.engine.history.rounds[-1].blocks_updated) == [1, 2, 3]


def test_hostile_connections_are_dropped_and_change_nothing(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    link: DataLink,
    tiny_model_dir: Path,
) -> None:
    agents = start_round(stub, tiny_model_dir)
    first = agents[0]
    collector = coordinator.engine.current.collector  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    for size in (1, 7, 8, 100, 70000):  # random bytes: no answer, the connection closed
        assert hostile(coordinator, rng.bytes(size)) == b""
    # A frame larger than allowed is refused from its length, unread.
    assert hostile(coordinator, MAGIC + struct.pack(">I", MAX_FRAME_BYTES + 1)) == b""
    assert hostile(coordinator, MAGIC + frame(b"\xff" * 20)) == b""  # not a BulkOpen

    header = pb.UploadHeader(session=first.session, round=1, block=first.instruction.block)  # type: ignore[union-attr]
    opening = MAGIC + frame(pb.BulkOpen(upload=header).SerializeToString())
    name = coordinator.trainer.block_names[header.block][0]
    # A tensor header declaring 256 TiB: refused before a byte of it is read.
    huge = pb.TensorChunk(name=name, shape=[65536] * 4, dtype="float32", total_bytes=2**50)
    answer = hostile(coordinator, opening, frame(huge.SerializeToString()))
    go_ahead, rest = status_in(answer), answer[4 + len(pb.BulkStatus().SerializeToString()) :]
    assert go_ahead.code == 0
    final = status_in(rest)
    assert final.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], final.details
    assert "shape" in final.details
    assert collector.uploads == {}
    # The refusal ended this device's hold on its block: its good upload now finds none.
    good = gradient(coordinator, first, coordinator.engine.current.weights)  # type: ignore[union-attr]
    again = refused(lambda: upload(link, first, good))
    assert again.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)

    # A second device stops halfway through a tensor: its hold ends too, nothing is stored.
    second = agents[1]
    header = pb.UploadHeader(session=second.session, round=1, block=second.instruction.block)  # type: ignore[union-attr]
    name = coordinator.trainer.block_names[header.block][0]
    shape = coordinator.trainer.shapes[name]
    partial = pb.TensorChunk(
        name=name, shape=list(shape), dtype="float32", total_bytes=4 * int(np.prod(shape))
    )
    hostile(
        coordinator,
        MAGIC + frame(pb.BulkOpen(upload=header).SerializeToString()),
        frame(partial.SerializeToString()) + b"\0" * 8,
    )
    assert eventually(lambda: second.device_id not in collector.assignment)
    assert collector.uploads == {}


def test_a_silent_client_is_dropped_at_the_opening_timeout(
    coordinator: RunningCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_port, "OPENING_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", coordinator.data_port or 0), timeout=20) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the coordinator, not by our timeout
        assert time.monotonic() - started < 15


def test_an_unreachable_data_port_is_reported_before_anything_is_sent() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        link = DataLink("127.0.0.1", port, PLAINTEXT)
        with pytest.raises(DataPortUnreachable, match=r"data port 127\.0\.0\.1"):
            link.download(pb.WeightsRequest(session="s", round=1), timeout_s=5)


def test_an_unreachable_data_port_falls_back_to_grpc(tiny_model_dir: Path, tmp_path: Path) -> None:
    with one_round_coordinator(tiny_model_dir, tmp_path) as running:
        connection = CoordinatorConnection(
            f"127.0.0.1:{running.port}", PLAINTEXT, COORDINATOR_MAX_MESSAGE_BYTES, threading.Event()
        )
        try:
            welcome = connection.register(
                pb.RegisterRequest(
                    device_id="dev0", model_fingerprint=model_fingerprint(tiny_model_dir)
                )
            )
            assert welcome.data_port == running.data_port and connection.data_link is not None
            with socket.socket() as closed:
                closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
                connection.data_link = DataLink("127.0.0.1", closed.getsockname()[1], PLAINTEXT)
                with pytest.raises(grpc.RpcError) as caught:
                    connection.download(1)  # no round runs yet: gRPC's own answer says so
            assert connection.data_link is None  # gRPC from now on
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not running" in (caught.value.details() or "")
        finally:
            connection.close()

"""The agent's side of the data port: where it dials, and its fall back to gRPC."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import grpc
import pytest

from lola_deft.device_agent.connection import CoordinatorConnection
from lola_deft.device_agent.data_link import DataLink, split_host
from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.credentials import PLAINTEXT
from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.grpc_options import COORDINATOR_MAX_MESSAGE_BYTES
from tests.server.one_round import one_round_coordinator


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("edge:50052", "edge"),
        ("192.168.1.10:50052", "192.168.1.10"),
        ("[::1]:50052", "::1"),
        ("dns:///edge.lan:50052", "edge.lan"),
        ("edge", "edge"),
    ],
)
def test_the_data_port_is_dialled_on_the_coordinators_host(address: str, host: str) -> None:
    assert split_host(address) == host


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

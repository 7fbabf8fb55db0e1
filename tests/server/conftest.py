"""Fixtures of the coordinator tests: a one-round coordinator and a plaintext stub to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lola_deft.protos.deft.v1 import coordinator_pb2_grpc
from lola_deft.server.service import RunningCoordinator
from tests.server.one_round import one_round_coordinator


@pytest.fixture
def coordinator(tiny_model_dir: Path, tmp_path: Path) -> Iterator[RunningCoordinator]:
    with one_round_coordinator(tiny_model_dir, tmp_path) as running:
        yield running


@pytest.fixture
def stub(coordinator: RunningCoordinator) -> Iterator[coordinator_pb2_grpc.CoordinatorStub]:
    with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as channel:
        yield coordinator_pb2_grpc.CoordinatorStub(channel)

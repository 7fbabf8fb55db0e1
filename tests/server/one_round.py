"""A coordinator and scheduler in this process for one round, and agents a test plays by hand,
call by call (the gRPC and data-port tests share them)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.scheduler.service import start_scheduler
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.service import RunningCoordinator, start_coordinator

BLOCKS = 3


@dataclass
class PlayedAgent:
    """An agent this test plays by hand, call by call."""

    device_id: str
    session: str
    instruction: coordinator_pb2.RoundInstruction | None = None


@contextmanager
def one_round_coordinator(
    model_dir: Path, tmp_path: Path, metrics_port: int | None = None, **overrides: object
) -> Iterator[RunningCoordinator]:
    """Scheduler and coordinator in this process, for one round with agents the test plays."""
    scheduler = start_scheduler("127.0.0.1", 0)
    config = CoordinatorConfig(
        model_dir=model_dir,
        data_dir=EMBEDDED_TASK_DIR,
        rounds=1,
        report_wait_s=0.2,
        round_timeout_s=60,
        checkpoint_dir=tmp_path / "ck",
        liveness_timeout_s=120,
        scheduler_address=f"127.0.0.1:{scheduler.port}",
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    running = start_coordinator(config, host="127.0.0.1", port=0, metrics_port=metrics_port)
    try:
        yield running
    finally:
        running.stop(grace=None)
        scheduler.stop(grace=None)


def report(session: str, memory: float = 8e9) -> coordinator_pb2.ResourceReport:
    return coordinator_pb2.ResourceReport(
        session=session,
        round=1,
        available_memory_bytes=memory,
        channel=coordinator_pb2.ChannelState(spectral_efficiency=2.0),
        block_costs=[
            coordinator_pb2.BlockCost(
                block=b, seconds_per_iteration=0.1 * b, peak_memory_bytes=1e6 * b
            )
            for b in range(1, BLOCKS + 1)
        ],
    )


def register(
    stub: coordinator_pb2_grpc.CoordinatorStub, device_id: str, fingerprint: str
) -> PlayedAgent:
    response = stub.Register(
        coordinator_pb2.RegisterRequest(device_id=device_id, model_fingerprint=fingerprint),
        timeout=10,
    )
    assert response.blocks == BLOCKS and response.task == "sst2"
    return PlayedAgent(device_id, response.session)


def start_round(
    stub: coordinator_pb2_grpc.CoordinatorStub, tiny_model_dir: Path
) -> list[PlayedAgent]:
    fingerprint = model_fingerprint(tiny_model_dir)
    agents = [register(stub, f"dev{i}", fingerprint) for i in range(BLOCKS)]
    with ThreadPoolExecutor(BLOCKS) as pool:
        instructions = list(
            pool.map(lambda a: stub.ReportResources(report(a.session), timeout=60), agents)
        )
    for agent, instruction in zip(agents, instructions, strict=True):
        agent.instruction = instruction
    assert sorted(i.block for i in instructions) == [1, 2, 3]
    assert {i.round for i in instructions} == {1}
    return agents


def gradient(
    coordinator: RunningCoordinator,
    agent: PlayedAgent,
    weights: dict[str, np.ndarray],
    *,
    block: int | None = None,
    value: float = 0.01,
) -> dict[str, np.ndarray]:
    trainer = coordinator.trainer
    block = block if block is not None else agent.instruction.block  # type: ignore[union-attr]
    names = trainer.block_names[block] + trainer.head_names
    return {name: np.full(weights[name].shape, value, np.float32) for name in names}

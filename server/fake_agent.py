"""A fake device agent that speaks the real deft.v1 protocol with no model behind it: it
registers, heartbeats, reports, downloads the adapters and uploads a small valid gradient at
once. Hundreds run on one asyncio loop, so the benchmark and the tests can load a real
coordinator with a fleet that costs no compute. Every call's latency and status is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.deft.v1 import coordinator_pb2_grpc
from lola_deft.protos.tensor_stream import TensorAssembler, upload_parts


@dataclass(frozen=True)
class BlockLayout:
    """Which adapter tensors make up each block and the head (names as the coordinator uses)."""

    block_names: dict[int, list[str]]
    head_names: list[str]

    @property
    def blocks(self) -> int:
        return len(self.block_names)


@dataclass
class CallLog:
    """Latency (seconds) of every successful call and the status of every failed one."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    instructions: Counter[str] = field(default_factory=Counter)

    def ok(self, rpc: str, seconds: float) -> None:
        self.latencies.setdefault(rpc, []).append(seconds)

    def failed(self, rpc: str, error: grpc.RpcError) -> None:
        self.errors[(rpc, error.code().name)] += 1

    def percentiles(self, rpc: str) -> tuple[float, float]:
        values = self.latencies.get(rpc, [])
        if not values:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(values, [50, 99])
        return float(p50), float(p99)


def gradient_for(
    block: int, layout: BlockLayout, weights: dict[str, np.ndarray], value: float = 1e-3
) -> dict[str, np.ndarray]:
    names = layout.block_names[block] + layout.head_names
    return {name: np.full(weights[name].shape, value, np.float32) for name in names}


class FakeAgent:
    def __init__(
        self,
        stub: coordinator_pb2_grpc.CoordinatorStub,
        device_id: str,
        fingerprint: str,
        layout: BlockLayout,
        calls: CallLog,
        *,
        heartbeat_s: float | None = None,
        efficiency: float = 2.0,
        compute: bool = False,
        gradient: Callable[[int, BlockLayout, dict[str, np.ndarray]], dict[str, np.ndarray]]
        | None = None,
    ) -> None:
        self.stub = stub
        self.device_id = device_id
        self.fingerprint = fingerprint
        self.layout = layout
        self.calls = calls
        self.heartbeat_s = heartbeat_s
        self.efficiency = efficiency
        self.compute = compute  # emulate the block's compute time (as reported) before uploading
        self.gradient = gradient or gradient_for
        self.session = ""
        self.rounds_trained = 0

    async def _timed(self, rpc: str, call: object) -> object:
        started = time.perf_counter()
        try:
            result = await call  # type: ignore[misc]
        except grpc.RpcError as error:
            self.calls.failed(rpc, error)
            raise
        self.calls.ok(rpc, time.perf_counter() - started)
        return result

    async def register(self) -> pb.RegisterResponse:
        request = pb.RegisterRequest(
            device_id=self.device_id, hardware="fake", model_fingerprint=self.fingerprint
        )
        response = await self._timed("Register", self.stub.Register(request, timeout=30))
        assert isinstance(response, pb.RegisterResponse)
        self.session = response.session
        return response

    def seconds_per_iteration(self, block: int) -> float:
        return 0.1 * (1 + block / self.layout.blocks)

    def report(self, round_number: int) -> pb.ResourceReport:
        blocks = self.layout.blocks
        return pb.ResourceReport(
            session=self.session,
            round=round_number,
            available_memory_bytes=8e9,
            channel=pb.ChannelState(spectral_efficiency=self.efficiency),
            block_costs=[
                pb.BlockCost(
                    block=b,
                    seconds_per_iteration=self.seconds_per_iteration(b),
                    peak_memory_bytes=1e6 * b,
                )
                for b in range(1, blocks + 1)
            ],
        )

    async def heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._timed(
                    "SendHeartbeat",
                    self.stub.SendHeartbeat(pb.Heartbeat(session=self.session), timeout=10),
                )
            except grpc.RpcError:
                continue

    async def train(self, instruction: pb.RoundInstruction) -> pb.UploadAck:
        started = time.perf_counter()
        assembler = TensorAssembler()
        try:
            async for chunk in self.stub.DownloadWeights(
                pb.WeightsRequest(session=self.session, round=instruction.round), timeout=60
            ):
                assembler.feed(chunk)
        except grpc.RpcError as error:
            self.calls.failed("DownloadWeights", error)
            raise
        self.calls.ok("DownloadWeights", time.perf_counter() - started)
        gradients = self.gradient(instruction.block, self.layout, assembler.finish())
        if self.compute:
            seconds = instruction.local_iterations * self.seconds_per_iteration(instruction.block)
            await asyncio.sleep(seconds)
        header = pb.UploadHeader(
            session=self.session, round=instruction.round, block=instruction.block
        )
        ack = await self._timed(
            "UploadGradient",
            self.stub.UploadGradient(upload_parts(header, gradients), timeout=60),
        )
        assert isinstance(ack, pb.UploadAck)
        self.rounds_trained += 1
        return ack

    async def run(self) -> None:
        """Serve rounds until the coordinator says training is finished."""
        setup = await self.register()
        beating = asyncio.create_task(
            self.heartbeats(self.heartbeat_s or setup.heartbeat_interval_s)
        )
        round_number = setup.round
        try:
            while True:
                try:
                    instruction = await self._timed(
                        "ReportResources",
                        self.stub.ReportResources(self.report(round_number), timeout=300),
                    )
                except grpc.RpcError:
                    await asyncio.sleep(0.5)
                    continue
                assert isinstance(instruction, pb.RoundInstruction)
                if instruction.finished:
                    return
                round_number = instruction.round
                self.calls.instructions["block" if instruction.block else "sit out"] += 1
                if instruction.block:
                    with contextlib.suppress(grpc.RpcError):  # logged in calls; next round
                        await self.train(instruction)
                    round_number += 1
        finally:
            beating.cancel()

"""The coordinator's gRPC service (deft.v1.Coordinator) on grpc.aio, and the process around it.

Handlers are thin: convert with `wire`, call the `Coordinator`, convert back. Every
CoordinatorError maps to one status code (service_status.STATUS_OF). Long-polls are awaits on
the event loop, not threads, so heartbeats and registrations never queue behind reports or
uploads, and a cancelled call releases what it held. Weights and gradients also travel over the
data port (data_port.py), served on threads beside the loop. The loop runs in a thread of its
own; callers get a synchronous handle (RunningCoordinator).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, add_port
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.protos.grpc_options import (
    COORDINATOR_MAX_MESSAGE_BYTES,
    COORDINATOR_SERVICE,
    http_host,
    server_options,
)
from lola_deft.protos.identity import Peer, peer_of
from lola_deft.protos.malformed import RejectMalformedAio
from lola_deft.protos.tensor_stream import ALLOWED_DTYPES, to_chunks
from lola_deft.server import wire
from lola_deft.server.allocator import (
    Allocator,
    FallbackAllocator,
    GrpcAllocator,
    InProcessAllocator,
)
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.coordinator import Coordinator
from lola_deft.server.data_port import DataPort, listen
from lola_deft.server.engine import EngineHooks, RoundEngine
from lola_deft.server.enrolment import Enrolment
from lola_deft.server.errors import CoordinatorError, DeadlinePassed
from lola_deft.server.export import export_metrics, write_history
from lola_deft.server.messages import AllocationRequest, Evaluation, RoundRecord
from lola_deft.server.metrics import CoordinatorMetrics
from lola_deft.server.pac_trainer import SideNetworkTrainer
from lola_deft.server.provenance import provenance
from lola_deft.server.registry import AgentRegistry
from lola_deft.server.service_status import reason, status_of
from lola_deft.server.trainer import AdapterTrainer
from lola_deft.server.trainers import build_trainer

log = logging.getLogger("deft.coordinator")
T = TypeVar("T")


def caller(context: grpc.aio.ServicerContext) -> Peer:
    """Who the TLS handshake proved the caller to be (nobody, on plaintext)."""
    return peer_of(context.auth_context())


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(
        self, coordinator: Coordinator, metrics: CoordinatorMetrics, data_port: int = 0
    ) -> None:
        self.coordinator = coordinator
        self.metrics = metrics
        self.data_port = data_port  # announced to every agent that registers (0: none)

    async def _refuse(self, context: grpc.aio.ServicerContext, error: CoordinatorError) -> NoReturn:
        await context.abort(status_of(error), str(error))
        raise AssertionError("unreachable: abort raises")

    async def Register(
        self, request: coordinator_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.RegisterResponse:
        try:
            welcome = self.coordinator.register(wire.registration(request), caller(context))
        except CoordinatorError as error:
            await self._refuse(context, error)
        log.info("agent %s registered (%.60s)", request.device_id, request.hardware)
        response = wire.welcome_message(welcome)
        response.data_port = self.data_port
        return response

    async def SendHeartbeat(
        self, request: coordinator_pb2.Heartbeat, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.HeartbeatAck:
        try:
            return coordinator_pb2.HeartbeatAck(
                round=self.coordinator.heartbeat(request.session, caller(context))
            )
        except CoordinatorError as error:
            await self._refuse(context, error)

    async def ReportResources(
        self, request: coordinator_pb2.ResourceReport, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.RoundInstruction:
        try:
            device_id = self.coordinator.authenticate(request.session, caller(context))
            instruction = await self.coordinator.report(wire.resource_report(request, device_id))
        except CoordinatorError as error:
            await self._refuse(context, error)
        return wire.instruction_message(instruction)

    async def DownloadWeights(
        self, request: coordinator_pb2.WeightsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Bounded in bytes (the adapters) and in time: a client that stops reading is cut off
        when the round's deadline passes instead of holding the stream."""
        try:
            weights, deadline = self.coordinator.weights(
                request.session, request.round, caller(context)
            )
        except CoordinatorError as error:
            await self._refuse(context, error)
        await self._stream(context, weights, deadline, "the round's deadline passed")

    async def UploadGradient(
        self,
        request_iterator: AsyncIterator[coordinator_pb2.GradientPart],
        context: grpc.aio.ServicerContext,
    ) -> coordinator_pb2.UploadAck:
        try:
            ack = await wire.receive_upload(request_iterator, self.coordinator, caller(context))
        except CoordinatorError as error:
            self.metrics.rejected.labels(reason(error)).inc()
            await self._refuse(context, error)
        if not ack.duplicate:
            self.metrics.bytes.labels("up").inc(ack.received_bytes)
        return wire.ack_message(ack)

    async def UploadStates(
        self,
        request_iterator: AsyncIterator[coordinator_pb2.StatesPart],
        context: grpc.aio.ServicerContext,
    ) -> coordinator_pb2.StatesAck:
        try:
            ack = await wire.receive_states(request_iterator, self.coordinator, caller(context))
        except CoordinatorError as error:
            self.metrics.rejected.labels(reason(error)).inc()
            await self._refuse(context, error)
        self.metrics.bytes.labels("up").inc(ack.received_bytes)
        return ack

    async def DownloadStates(
        self, request: coordinator_pb2.StatesRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """A stage's input, or the helpers' states for the owner: waits (bounded) until they
        are there, then streams them within the pipeline's deadline."""
        try:
            states, deadline = await self.coordinator.download_states(
                request.session, request.job, request.micro_batch, caller(context)
            )
        except CoordinatorError as error:
            await self._refuse(context, error)
        await self._stream(context, states, deadline, "the pipeline's deadline passed")

    async def _stream(
        self,
        context: grpc.aio.ServicerContext,
        tensors: dict[str, np.ndarray],
        deadline: float,
        late: str,
    ) -> None:
        """Tensors as chunks; a client that stops reading is cut off at `deadline`."""
        for chunk in to_chunks(tensors):
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(context.write(chunk), timeout=max(remaining, 0.0))
            except asyncio.TimeoutError:
                await self._refuse(context, DeadlinePassed(late))
            self.metrics.bytes.labels("down").inc(len(chunk.data))


@dataclass
class RunningCoordinator:
    """A coordinator serving on its own event loop thread, driven from synchronous code."""

    port: int
    data_port: int | None
    metrics_port: int | None
    engine: RoundEngine
    trainer: AdapterTrainer | SideNetworkTrainer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    _stopped: asyncio.Event = field(repr=False)
    _closing: list[Callable[[], None]] = field(default_factory=list)

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the coordinator's loop (where its state lives) and return its value."""

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def wait_for_farewells(self, timeout_s: float) -> set[str]:
        """After training, wait (up to timeout_s) until every live agent has heard "finished",
        so none is left retrying a vanished coordinator. Returns the agents that never did."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = self.call(self.engine.unfinished_agents)
            if not waiting or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.2)

    def stop(self, grace: float | None = 2.0) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopped.set)
            self.thread.join(timeout=30 + (grace or 0))
        for close in self._closing:
            close()


async def _serve(
    coordinator: Coordinator,
    engine: RoundEngine,
    metrics: CoordinatorMetrics,
    address: str,
    tls: TlsFiles,
    max_message_bytes: int,
    max_concurrent_rpcs: int,
    data_listener: socket.socket | None,
    started: Future[tuple[int, int | None, asyncio.Event]],
) -> None:
    stopped = asyncio.Event()
    data_port = None
    try:
        if data_listener is not None:
            data_port = DataPort(
                data_listener, tls, coordinator, metrics, asyncio.get_running_loop()
            )
        server = grpc.aio.server(
            options=server_options(max_message_bytes),
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            interceptors=[RejectMalformedAio()],
        )
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
            CoordinatorService(coordinator, metrics, data_port.port if data_port else 0), server
        )
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in ("", COORDINATOR_SERVICE):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (COORDINATOR_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
        )
        try:
            bound = add_port(server, address, tls)
        except RuntimeError:  # grpc's "Failed to bind": in use, or not an address of this host
            bound = 0
        if bound == 0:
            raise OSError(f"cannot bind the coordinator to {address} (in use, or not this host's)")
        await server.start()
        if data_port is not None:
            data_port.start()
    except BaseException as error:
        if data_listener is not None:
            data_listener.close()
        started.set_exception(error)
        return
    started.set_result((bound, data_port.port if data_port else None, stopped))
    rounds = asyncio.create_task(engine.run())
    await stopped.wait()
    engine.stop()
    await health_servicer.enter_graceful_shutdown()
    if data_port is not None:
        await asyncio.get_running_loop().run_in_executor(None, data_port.stop)
    await server.stop(1.0)
    try:
        await asyncio.wait_for(rounds, timeout=30)
    except asyncio.TimeoutError:
        log.warning("round engine did not stop within 30 s")


def _report_history_failure(written: Future[None]) -> None:
    """A history.json that cannot be written is said, not lost in the writer thread."""
    error = written.exception()
    if error is not None:
        log.error("history.json not written: %s", error)


def start_coordinator(
    config: CoordinatorConfig,
    *,
    host: str = "[::]",
    port: int = 50052,
    data_port: int | None = 0,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    max_message_bytes: int = COORDINATOR_MAX_MESSAGE_BYTES,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_baseline: Callable[[Evaluation], None] | None = None,
    on_allocation: Callable[[dict[str, float]], None] | None = None,
    tls: TlsFiles = PLAINTEXT,
    scheduler_tls: TlsFiles = PLAINTEXT,
    allocator: Allocator | None = None,
    enrolment: Enrolment | None = None,
) -> RunningCoordinator:
    """Load the model and dev data, restore a checkpoint if asked, start serving and the rounds.

    `data_port`: where weights and gradients travel as raw bytes (0: any free port; None: no data
    port, every transfer over gRPC)."""
    trainer = build_trainer(config, wire_bits=8 * ALLOWED_DTYPES[config.upload_dtype])
    origin = provenance(config)  # what history, checkpoints and the adapter card record
    metrics = CoordinatorMetrics()
    registry = AgentRegistry(config.liveness_timeout_s, config.forget_after_s, config.max_devices)
    if allocator is None:
        fallback = FallbackAllocator(
            GrpcAllocator(config.scheduler_address, config.scheduler_timeout_s, scheduler_tls),
            InProcessAllocator(),
            config.scheduler_retry_s,
        )
        metrics.scheduler_available.set_function(lambda: float(fallback.available))
        allocator = fallback
    history_paths = config.history_paths
    # history.json grows with the run: it is written off the event loop, by one thread, so the
    # files land in round order.
    history_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
    metrics.live_agents.set_function(registry.live_count)  # read at scrape time

    def export(record: RoundRecord, request: AllocationRequest) -> None:
        export_metrics(metrics, record, request)
        if history_paths:
            document = {**engine.history.to_dict(), "provenance": origin}
            for path in history_paths:
                history_writer.submit(write_history, path, document).add_done_callback(
                    _report_history_failure
                )

    hooks = EngineHooks(on_baseline, on_allocation, [export])
    if on_round is not None:
        hooks.on_round.append(lambda record, request: on_round(record))
    engine = RoundEngine(
        config,
        trainer,
        registry,
        allocator,
        hooks,
        completed=trainer.state.round,
        history=trainer.restored_history(),
        pipeline_costs=trainer.backbone_costs if isinstance(trainer, SideNetworkTrainer) else None,
    )
    coordinator = Coordinator(
        config,
        engine,
        registry,
        model_fingerprint(config.model_dir),
        trainer.spec.num_labels,
        enrolment or Enrolment(require_identity=tls.ca is not None),
    )
    # The model, tokenizer and libraries are a heap of long-lived objects: keep them out of the
    # cyclic collector's full passes, which would otherwise stall the event loop for tens of ms.
    gc.collect()
    gc.freeze()
    # The metrics port first: a busy one must stop the start before any round can begin.
    try:
        bound_metrics = (
            metrics.serve(metrics_port, metrics_host or http_host(host))
            if metrics_port is not None
            else None
        )
    except OSError:
        allocator.close()
        raise
    try:
        data_listener = listen(host, data_port) if data_port is not None else None
    except OSError:
        allocator.close()
        raise
    loop = asyncio.new_event_loop()
    started: Future[tuple[int, int | None, asyncio.Event]] = Future()
    serving = _serve(
        coordinator,
        engine,
        metrics,
        f"{host}:{port}",
        tls,
        max_message_bytes,
        max_concurrent_rpcs=3 * config.max_devices + 64,
        data_listener=data_listener,
        started=started,
    )
    thread = threading.Thread(target=_run_loop, args=(loop, serving), name="coordinator")
    thread.start()
    try:
        bound, bound_data, stopped = started.result(timeout=60)
    except BaseException:
        thread.join(timeout=10)
        allocator.close()
        raise
    return RunningCoordinator(
        bound,
        bound_data,
        bound_metrics,
        engine,
        trainer,
        loop,
        thread,
        stopped,
        [allocator.close, history_writer.shutdown],
    )


def _run_loop(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, None]) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()

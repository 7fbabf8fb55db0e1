"""The coordinator's gRPC service (deft.v1.Coordinator) and the process that runs it.

Handlers validate and hand over to the RoundEngine; every rejection carries a status code and a
message that names the problem, and leaves the round state untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lola_deft.ml.batching import encode
from lola_deft.ml.glue import read_split, task_spec
from lola_deft.ml.model import load_model, model_fingerprint
from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, add_port
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.protos.grpc_options import (
    COORDINATOR_SERVICE,
    DEFAULT_MAX_MESSAGE_BYTES,
    message_size_options,
)
from lola_deft.protos.tensor_stream import TensorStreamError, from_chunks, to_chunks
from lola_deft.scheduler.client import SchedulerClient
from lola_deft.server.aggregation import UploadRejected
from lola_deft.server.metrics import CoordinatorMetrics
from lola_deft.server.registry import AgentRegistry, UnknownSession
from lola_deft.server.rounds import CoordinatorConfig, ReportRejected, RoundEngine
from lola_deft.server.training_state import TrainingState, adapter_digest

log = logging.getLogger("deft.coordinator")
MAX_DEVICE_ID = 128


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(
        self,
        engine: RoundEngine,
        registry: AgentRegistry,
        fingerprint: str,
        metrics: CoordinatorMetrics,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.fingerprint = fingerprint
        self.metrics = metrics

    def _session(self, session: str, context: grpc.ServicerContext) -> str:
        try:
            return self.registry.touch(session).device_id
        except UnknownSession as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
            raise  # unreachable: abort raises

    def Register(
        self,
        request: coordinator_pb2.RegisterRequest,
        context: grpc.ServicerContext,
    ) -> coordinator_pb2.RegisterResponse:
        device_id = request.device_id
        if not device_id or len(device_id) > MAX_DEVICE_ID or not device_id.isprintable():
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"device_id: must be 1..{MAX_DEVICE_ID} printable characters",
            )
        if request.model_fingerprint != self.fingerprint:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model_fingerprint: agent loaded {request.model_fingerprint!r}, "
                f"coordinator trains {self.fingerprint!r}",
            )
        record = self.registry.register(
            device_id, request.hardware, request.agent_version, list(request.capabilities)
        )
        config = self.engine.config
        log.info(
            "agent %s registered (%s, agent %s)", device_id, request.hardware, request.agent_version
        )
        return coordinator_pb2.RegisterResponse(
            session=record.session,
            heartbeat_interval_s=config.heartbeat_interval_s,
            model_name=self.fingerprint,
            lora_rank=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_target_modules=list(config.lora.targets),
            blocks=self.engine.blocks,
            task=config.task,
            num_labels=self.engine.state.loaded.model.config.num_labels,
            batch_size=config.batch_size,
            max_seq_length=config.max_seq_length,
            round=self.engine.state.round + 1,
            agent_index=record.index,
        )

    def SendHeartbeat(
        self,
        request: coordinator_pb2.Heartbeat,
        context: grpc.ServicerContext,
    ) -> coordinator_pb2.HeartbeatAck:
        self._session(request.session, context)
        return coordinator_pb2.HeartbeatAck(round=self.engine.state.round)

    def ReportResources(
        self,
        request: coordinator_pb2.ResourceReport,
        context: grpc.ServicerContext,
    ) -> coordinator_pb2.RoundInstruction:
        device_id = self._session(request.session, context)
        try:
            return self.engine.submit_report(device_id, request)
        except ReportRejected as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            raise

    def DownloadWeights(
        self,
        request: coordinator_pb2.WeightsRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[coordinator_pb2.TensorChunk]:
        device_id = self._session(request.session, context)
        try:
            weights = self.engine.weights_for(device_id, request.round)
        except LookupError as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except PermissionError as error:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
        for chunk in to_chunks(weights, session=request.session, round=request.round):
            self.metrics.bytes.labels("down").inc(len(chunk.data))
            yield chunk

    def UploadGradient(
        self,
        request_iterator: Iterator[coordinator_pb2.TensorChunk],
        context: grpc.ServicerContext,
    ) -> coordinator_pb2.UploadAck:
        started = time.perf_counter()
        try:
            bundle = from_chunks(request_iterator)
        except TensorStreamError as error:
            self.metrics.rejected.labels("malformed").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gradient stream: {error}")
        upload_s = time.perf_counter() - started
        device_id = self._session(bundle.session, context)
        running = self.engine.current
        if running is None or running.number != bundle.round:
            self.metrics.rejected.labels("wrong_round").inc()
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"round {bundle.round} is not running"
            )
        try:
            duplicate, received = running.collector.accept(device_id, bundle, upload_s)
        except UploadRejected as error:
            self.metrics.rejected.labels(error.code.name.lower()).inc()
            context.abort(error.code, str(error))
        if not duplicate:
            self.metrics.bytes.labels("up").inc(received)
        return coordinator_pb2.UploadAck(
            round=bundle.round, block=bundle.block, received_bytes=received, duplicate=duplicate
        )


@dataclass
class RunningCoordinator:
    server: grpc.Server
    port: int
    engine: RoundEngine
    thread: threading.Thread
    metrics_port: int | None
    scheduler: SchedulerClient
    health: health.HealthServicer

    def stop(self, grace: float | None = 2.0) -> None:
        self.engine.stop.set()
        self.health.enter_graceful_shutdown()
        self.thread.join(timeout=30)
        self.server.stop(grace).wait()
        self.scheduler.close()


def start_coordinator(
    config: CoordinatorConfig,
    *,
    host: str = "[::]",
    port: int = 50052,
    metrics_port: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_baseline: Callable[[dict[str, Any]], None] | None = None,
    on_allocation: Callable[[dict[str, float]], None] | None = None,
    tls: TlsFiles = PLAINTEXT,
    scheduler_tls: TlsFiles = PLAINTEXT,
) -> RunningCoordinator:
    """Load the model and dev data, restore a checkpoint if asked, start serving and the rounds."""
    spec = task_spec(config.task)
    num_labels = spec.num_labels
    loaded = load_model(config.model_dir, num_labels, config.lora, seed=config.seed)
    state = TrainingState(loaded, config.learning_rate)
    if config.resume:
        restored = state.load(config.checkpoint_dir)
        print(
            f"resumed from {restored}: {state.round} rounds done, "
            f"adapter sha256 {adapter_digest(state.snapshot())}",
            flush=True,
        )
    dev = encode(loaded.tokenizer, read_split(config.data_dir, spec, "dev"), config.max_seq_length)
    metrics = CoordinatorMetrics()
    registry = AgentRegistry(config.liveness_timeout_s)
    scheduler = SchedulerClient(config.scheduler_address, timeout_s=60, tls=scheduler_tls)
    engine = RoundEngine(
        config,
        state,
        registry,
        scheduler.allocate,
        metrics,
        spec,
        dev,
        on_round,
        on_baseline,
        on_allocation,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64), options=message_size_options(max_message_bytes)
    )
    fingerprint = model_fingerprint(config.model_dir)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
        CoordinatorService(engine, registry, fingerprint, metrics), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", COORDINATOR_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (COORDINATOR_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
    )
    bound = add_port(server, f"{host}:{port}", tls)
    if bound == 0:
        raise OSError(f"cannot bind the coordinator to {host}:{port}")
    server.start()
    bound_metrics = metrics.serve(metrics_port) if metrics_port is not None else None
    thread = threading.Thread(target=engine.run, name="rounds", daemon=True)
    thread.start()
    return RunningCoordinator(
        server, bound, engine, thread, bound_metrics, scheduler, health_servicer
    )

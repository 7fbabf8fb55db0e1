"""The device agent: the connection (register, heartbeat, back-off) driving the work (prepare,
train a block) round after round.

Local data never leaves this process: only block gradients (and the resource report) are sent.
The agent survives coordinator restarts: on UNAVAILABLE or an unknown session it backs off
exponentially and registers again.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from lola_deft import __version__
from lola_deft.device_agent.connection import (
    RETRYABLE,
    ROUND_LEVEL,
    Backoff,
    CoordinatorConnection,
    PipelineTimeout,
    SessionLost,
)
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.pac_worker import SideNetworkWorker
from lola_deft.device_agent.pipeline_work import run_pipeline_task
from lola_deft.device_agent.settings import AgentConfig
from lola_deft.device_agent.worker import (
    BlockWorker,
    DeviceUnavailable,
    SetupError,
    available_memory,
    resolve_device,
)
from lola_deft.protos import capabilities
from lola_deft.protos.deft.v1 import coordinator_pb2

__all__ = ["AgentConfig", "DeviceAgent", "DeviceUnavailable", "available_memory", "resolve_device"]
log = logging.getLogger("deft.agent")


class DeviceAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self.metrics = AgentMetrics(config.device_id)
        self.lora = BlockWorker(config, self.metrics)
        self.pac: SideNetworkWorker | None = None  # built when a --method pac run asks for it
        self.worker: BlockWorker | SideNetworkWorker = self.lora
        self.rounds_trained = 0
        self.next_round = 0  # the round to report for next
        self.metrics_port = (
            self.metrics.serve(config.metrics_port, config.metrics_host)
            if config.metrics_port is not None
            else None
        )
        self.connection = CoordinatorConnection(
            config.coordinator,
            config.tls,
            config.max_message_bytes,
            self.stop,
            on_contact=self.metrics.contact,
        )

    def run(self) -> int:
        """Serve rounds until the coordinator says training is finished (or stop is set)."""
        backoff = Backoff(max_s=self.config.max_backoff_s)
        name = self.config.device_id
        while not self.stop.is_set():
            try:
                # A transient failure keeps the session (its heartbeats carry on): only a lost
                # session means registering again, so a blip never looks like a second device.
                if not self.connection.session:
                    self.next_round = self.register().round
                    backoff.reset()
                if self.serve_rounds(self.next_round):
                    log.info(
                        "%s: training finished after %d rounds here", name, self.rounds_trained
                    )
                    return 0
            except SessionLost as lost:
                self.connection.forget_session()
                log.warning("%s: %s; registering again", name, lost)
            except grpc.RpcError as error:
                code = error.code()
                if code not in RETRYABLE:
                    log.error("%s: coordinator refused: %s: %s", name, code.name, error.details())
                    return 1
                delay = backoff.next_delay()
                log.warning(
                    "%s: coordinator %s (%s); retrying in %.1f s",
                    name,
                    self.config.coordinator,
                    code.name,
                    delay,
                )
                self.stop.wait(delay)
        return 0

    def register(self) -> coordinator_pb2.RegisterResponse:
        setup = self.connection.register(
            coordinator_pb2.RegisterRequest(
                device_id=self.config.device_id,
                hardware=self.config.hardware,
                agent_version=__version__,
                capabilities=[*self.lora.capabilities, capabilities.PAC],
                model_fingerprint=self.lora.fingerprint,
            )
        )
        # Heartbeats already run: loading and profiling take a while, and we are alive meanwhile.
        self.worker = self.worker_for(setup.method or "lola")
        self.worker.prepare(setup)
        log.info(
            "%s: registered (session %s), coordinator at round %d",
            self.config.device_id,
            setup.session[:8],
            setup.round,
        )
        return setup

    def worker_for(self, method: str) -> BlockWorker | SideNetworkWorker:
        """LoRA blocks, or PAC+'s side network (sharing the device and the channel)."""
        if method == "lola":
            return self.lora
        if method == "pac":
            if self.pac is None:
                lora = self.lora
                self.pac = SideNetworkWorker(self.config, self.metrics, lora.device, lora.channel)
            return self.pac
        raise SetupError(f"the coordinator trains with method {method!r}; upgrade this agent")

    def serve_rounds(self, round_number: int) -> bool:
        """Returns True when training is finished."""
        while not self.stop.is_set():
            report = self.worker.report(self.connection.session, round_number)
            instruction = self.connection.report(report)
            if instruction.finished:
                return True
            round_number = self.next_round = instruction.round
            if instruction.pipeline.job:
                self.pipeline_stage(instruction.pipeline)
                continue
            if instruction.block == 0:
                self.metrics.block.labels(self.config.device_id).set(0)
                continue
            try:
                self.train_round(instruction)
            except grpc.RpcError as error:
                if error.code() not in ROUND_LEVEL:
                    raise
                # This round's work was refused (too late, round closed, a bad gradient): the
                # coordinator has moved on, and so do we.
                log.warning(
                    "%s: round %d not counted: %s: %s",
                    self.config.device_id,
                    instruction.round,
                    error.code().name,
                    error.details(),
                )
            round_number = self.next_round = round_number + 1
        return False

    def pipeline_stage(self, task: coordinator_pb2.PipelineTask) -> None:
        """This device's stage of a PAC+ pipeline; a pipeline that fails costs only itself
        (the owner keeps what it cached, and the coordinator plans again)."""
        if not isinstance(self.worker, SideNetworkWorker):
            raise SetupError("a pipeline stage in a run that does not train PAC+")
        try:
            run_pipeline_task(task, self.worker, self.connection)
        except PipelineTimeout as error:
            log.warning("%s: pipeline %s: %s", self.config.device_id, task.job, error)
        except grpc.RpcError as error:
            if error.code() not in ROUND_LEVEL | {grpc.StatusCode.ABORTED}:
                raise
            log.warning(
                "%s: pipeline %s stopped: %s: %s",
                self.config.device_id,
                task.job,
                error.code().name,
                error.details(),
            )

    def train_round(self, instruction: coordinator_pb2.RoundInstruction) -> None:
        weights = self.connection.download(instruction.round)
        trained = self.worker.train(instruction, weights)
        started = time.perf_counter()
        ack = self.connection.upload(
            coordinator_pb2.UploadHeader(
                session=self.connection.session,
                round=instruction.round,
                block=instruction.block,
                compute_s=trained.compute_s,
                train_loss=trained.loss,
            ),
            trained.gradients,
            timeout_s=max(30.0, instruction.deadline_unix_s - time.time() + 30.0),
            dtype=self.worker.upload_dtype,
        )
        upload_s = time.perf_counter() - started
        self.worker.uploaded(trained, ack.received_bytes, upload_s)
        self.rounds_trained += 1
        device = self.config.device_id
        self.metrics.rounds.labels(device).inc()
        self.metrics.block.labels(device).set(instruction.block)
        self.metrics.compute.labels(device).set(trained.compute_s)
        self.metrics.upload.labels(device).set(upload_s)
        self.metrics.loss.labels(device).set(trained.loss)
        log.info(
            "%s: round %d block %d: loss %.4f, compute %.2f s, uploaded %d bytes in %.3f s%s",
            device,
            instruction.round,
            instruction.block,
            trained.loss,
            trained.compute_s,
            ack.received_bytes,
            upload_s,
            " (duplicate)" if ack.duplicate else "",
        )

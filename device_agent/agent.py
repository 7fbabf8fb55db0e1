"""The device agent: registers with the coordinator, reports resources, trains its block.

Local data never leaves this process: only block gradients (and the resource report) are sent.
The agent survives coordinator restarts: on UNAVAILABLE or an unknown session it backs off
exponentially and registers again.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import torch

from lola_deft import __version__
from lola_deft.device_agent.channel import EmulatedChannel, MeasuredChannel
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.profiler import BlockProfile, load_or_measure
from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import DataError, read_split, shard_indices, task_spec
from lola_deft.ml.model import LoadedModel, LoraSettings, load_model, model_fingerprint
from lola_deft.ml.training import block_gradient
from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, open_channel
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.protos.grpc_options import DEFAULT_MAX_MESSAGE_BYTES, message_size_options
from lola_deft.protos.tensor_stream import from_chunks, to_chunks

log = logging.getLogger("deft.agent")
# Refusals that concern one round only; the agent carries on with the next round.
ROUND_LEVEL = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
}
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


@dataclass
class AgentConfig:
    coordinator: str
    device_id: str
    model_dir: Path
    data_dir: Path
    shard: int = 0
    num_shards: int = 1
    shard_mode: str = "iid"
    device: str = "auto"
    memory_limit_bytes: float | None = None
    slowdown: float = 1.0
    channel: str = "emulated"  # or "measured"
    transmit_snr_db: float = 10.0
    path_loss: float = 1e-3
    seed: int = 0
    profile_cache: Path | None = None
    max_backoff_s: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    metrics_port: int | None = None
    tls: TlsFiles = PLAINTEXT
    hardware: str = field(default_factory=lambda: f"{platform.machine()}, {os.cpu_count()} CPUs")


class DeviceUnavailable(RuntimeError):
    """The requested training device does not exist on this machine."""


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda requested, but CUDA is not available to torch")
    return torch.device(choice)


def available_memory(device: torch.device, limit: float | None) -> float:
    """Free memory on the training device, capped by --memory-limit to emulate smaller hardware."""
    if device.type == "cuda":
        free = float(torch.cuda.mem_get_info(device)[0])
    else:
        free = float(psutil.virtual_memory().available)
    return min(free, limit) if limit else free


class SessionLost(Exception):
    """The coordinator no longer knows this session (it restarted): register again."""


class DeviceAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        # Fail fast, before contacting anyone, on folders that cannot work.
        self.fingerprint = model_fingerprint(config.model_dir)
        if not (config.data_dir / "train.tsv").is_file():
            raise DataError(f"{config.data_dir}/train.tsv: no such file (need a GLUE task folder)")
        self.device = resolve_device(config.device)
        self.channel = (
            MeasuredChannel()
            if config.channel == "measured"
            else EmulatedChannel(config.transmit_snr_db, config.path_loss, config.seed)
        )
        self.loaded: LoadedModel | None = None
        self.sampler: BatchSampler | None = None
        self.profile: BlockProfile | None = None
        self.setup_key: tuple[object, ...] | None = None
        self.stop = threading.Event()
        self.rounds_trained = 0
        self.metrics = AgentMetrics(config.device_id)
        self.metrics_port = (
            self.metrics.serve(config.metrics_port) if config.metrics_port is not None else None
        )
        channel = open_channel(
            config.coordinator, config.tls, message_size_options(config.max_message_bytes)
        )
        self.stub = coordinator_pb2_grpc.CoordinatorStub(channel)

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Serve rounds until the coordinator says training is finished (or stop is set)."""
        backoff = 0.5
        while not self.stop.is_set():
            try:
                session, setup = self.register()
                backoff = 0.5
                if self.serve_rounds(session, setup):
                    log.info(
                        "%s: training finished after %d rounds here",
                        self.config.device_id,
                        self.rounds_trained,
                    )
                    return 0
            except SessionLost as lost:
                log.warning("%s: %s; registering again", self.config.device_id, lost)
            except grpc.RpcError as error:
                code = error.code()
                if code not in RETRYABLE:
                    log.error(
                        "%s: coordinator refused: %s: %s",
                        self.config.device_id,
                        code.name,
                        error.details(),
                    )
                    return 1
                delay = backoff * (1 + random.random() * 0.25)
                log.warning(
                    "%s: coordinator %s (%s); retrying in %.1f s",
                    self.config.device_id,
                    self.config.coordinator,
                    code.name,
                    delay,
                )
                self.stop.wait(delay)
                backoff = min(backoff * 2, self.config.max_backoff_s)
        return 0

    def register(self) -> tuple[str, coordinator_pb2.RegisterResponse]:
        response = self.stub.Register(
            coordinator_pb2.RegisterRequest(
                device_id=self.config.device_id,
                hardware=self.config.hardware,
                agent_version=__version__,
                capabilities=["cuda"] if self.device.type == "cuda" else ["cpu"],
                model_fingerprint=self.fingerprint,
            ),
            timeout=30,
            wait_for_ready=True,
        )
        # Heartbeats first: loading and profiling take a while, and we are alive meanwhile.
        threading.Thread(
            target=self._heartbeat,
            args=(response.session, response.heartbeat_interval_s),
            daemon=True,
        ).start()
        self.prepare(response)
        log.info(
            "%s: registered (session %s), coordinator at round %d",
            self.config.device_id,
            response.session[:8],
            response.round,
        )
        return response.session, response

    def prepare(self, setup: coordinator_pb2.RegisterResponse) -> None:
        """Load model, local data shard and profile once per training setup."""
        lora = LoraSettings(setup.lora_rank, setup.lora_alpha, tuple(setup.lora_target_modules))
        shard = self.config.shard
        if shard < 0:  # --shard auto/N
            shard = setup.agent_index % self.config.num_shards
        key = (lora, setup.task, setup.num_labels, setup.batch_size, setup.max_seq_length, shard)
        if key == self.setup_key:
            return
        config = self.config
        self.loaded = load_model(config.model_dir, setup.num_labels, lora, seed=config.seed)
        self.loaded.model.to(self.device)
        spec = task_spec(setup.task)
        train = read_split(config.data_dir, spec, "train")
        mine = train.subset(
            shard_indices(train.labels, config.num_shards, shard, mode=config.shard_mode, seed=17)
        )
        data = encode(self.loaded.tokenizer, mine, setup.max_seq_length)
        self.sampler = BatchSampler(data, setup.batch_size, seed=config.seed + 1000 * shard)
        identity = {
            "model": str(config.model_dir),
            "fingerprint": self.fingerprint,
            "lora": [lora.rank, lora.alpha, list(lora.targets)],
            "labels": setup.num_labels,
            "batch": self.sampler.batch_size,
            "seq": setup.max_seq_length,
        }
        self.profile, cached = load_or_measure(
            self.loaded,
            self.sampler.next_batch(),
            self.device,
            identity,
            cache_dir=config.profile_cache,
            slowdown=config.slowdown,
        )
        for block, (seconds, peak) in enumerate(
            zip(self.profile.seconds_per_iteration, self.profile.peak_memory_bytes, strict=True),
            start=1,
        ):
            self.metrics.block_seconds.labels(config.device_id, str(block)).set(seconds)
            self.metrics.block_memory.labels(config.device_id, str(block)).set(peak)
        log.info(
            "%s: %d local examples (shard %d/%d, %s); profile %s: %s s/iteration per block",
            config.device_id,
            len(mine),
            shard,
            config.num_shards,
            config.shard_mode,
            "cached" if cached else "measured",
            " ".join(f"{s:.3f}" for s in self.profile.seconds_per_iteration),
        )
        self.setup_key = key

    def _heartbeat(self, session: str, interval: float) -> None:
        while not self.stop.wait(max(interval, 0.2)):
            try:
                self.stub.SendHeartbeat(coordinator_pb2.Heartbeat(session=session), timeout=10)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return  # session gone; the round loop re-registers
                continue

    # -- rounds ----------------------------------------------------------------------------
    def report(self, session: str, round_number: int) -> coordinator_pb2.ResourceReport:
        assert self.profile is not None
        reading = self.channel.reading(round_number)
        memory = available_memory(self.device, self.config.memory_limit_bytes)
        self.metrics.memory.labels(self.config.device_id).set(memory)
        self.metrics.efficiency.labels(self.config.device_id).set(reading.spectral_efficiency)
        return coordinator_pb2.ResourceReport(
            session=session,
            round=round_number,
            available_memory_bytes=memory,
            compute_factor=1.0,
            channel=coordinator_pb2.ChannelState(
                channel_gain=reading.channel_gain,
                snr_db=reading.snr_db,
                spectral_efficiency=reading.spectral_efficiency,
                measured_uplink_bps=reading.measured_uplink_bps,
            ),
            block_costs=[
                coordinator_pb2.BlockCost(block=b + 1, seconds_per_iteration=s, peak_memory_bytes=m)
                for b, (s, m) in enumerate(
                    zip(
                        self.profile.seconds_per_iteration,
                        self.profile.peak_memory_bytes,
                        strict=True,
                    )
                )
            ],
        )

    def serve_rounds(self, session: str, setup: coordinator_pb2.RegisterResponse) -> bool:
        """Returns True when training is finished."""
        round_number = setup.round
        while not self.stop.is_set():
            try:
                instruction = self.stub.ReportResources(
                    self.report(session, round_number), timeout=3600
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    raise SessionLost(error.details()) from error
                raise
            if instruction.finished:
                return True
            round_number = instruction.round
            if instruction.block == 0:
                self.metrics.block.labels(self.config.device_id).set(0)
                round_number += 1
                continue
            try:
                self.train_round(session, instruction)
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
            round_number += 1
        return False

    def train_round(self, session: str, instruction: coordinator_pb2.RoundInstruction) -> None:
        assert self.loaded is not None and self.sampler is not None
        weights = from_chunks(
            self.stub.DownloadWeights(
                coordinator_pb2.WeightsRequest(session=session, round=instruction.round),
                timeout=600,
            )
        )
        self.loaded.load_trainable_state(weights.tensors)
        result = block_gradient(
            self.loaded,
            instruction.block,
            self.sampler.take(instruction.local_iterations),
            device=self.device,
            slowdown=self.config.slowdown,
        )
        gradients = {name: g.numpy() for name, g in result.gradients.items()}
        started = time.perf_counter()
        ack = self.stub.UploadGradient(
            to_chunks(
                gradients,
                session=session,
                round=instruction.round,
                block=instruction.block,
                compute_s=result.compute_s,
                train_loss=result.loss,
            ),
            timeout=max(30.0, instruction.deadline_unix_s - time.time() + 30.0),
        )
        upload_s = time.perf_counter() - started
        if isinstance(self.channel, MeasuredChannel):
            self.channel.record_upload(ack.received_bytes, upload_s)
        self.rounds_trained += 1
        device = self.config.device_id
        self.metrics.rounds.labels(device).inc()
        self.metrics.block.labels(device).set(instruction.block)
        self.metrics.compute.labels(device).set(result.compute_s)
        self.metrics.upload.labels(device).set(upload_s)
        self.metrics.loss.labels(device).set(result.loss)
        log.info(
            "%s: round %d block %d: loss %.4f, compute %.2f s, uploaded %d bytes in %.3f s%s",
            self.config.device_id,
            instruction.round,
            instruction.block,
            result.loss,
            result.compute_s,
            ack.received_bytes,
            upload_s,
            " (duplicate)" if ack.duplicate else "",
        )

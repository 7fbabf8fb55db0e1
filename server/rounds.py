"""The round engine: the paper's Algorithm 1, run for real over gRPC.

A round: wait for resource reports from enough live agents; ask the scheduler microservice for an
allocation; hand each reporting agent its instruction (block and bandwidth, or "sit out"); serve
the round-start adapters; collect the block gradients until all arrive, the deadline passes, or
the missing agents are no longer alive; apply them with Adam; evaluate; checkpoint; export
metrics. gRPC handlers (server/service.py) only enqueue reports and uploads; this engine, in its
own thread, owns the sequence.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from lola_deft.ml.batching import EncodedSplit
from lola_deft.ml.evaluation import evaluate
from lola_deft.ml.glue import TaskSpec
from lola_deft.ml.model import HEAD
from lola_deft.protos.deft.v1 import coordinator_pb2, scheduler_pb2
from lola_deft.server.aggregation import RoundCollector
from lola_deft.server.metrics import CoordinatorMetrics
from lola_deft.server.registry import AgentRegistry
from lola_deft.server.settings import TrainingSettings
from lola_deft.server.training_state import TrainingState

log = logging.getLogger("deft.coordinator")


@dataclass
class CoordinatorConfig(TrainingSettings):
    rounds: int = 20
    policy: str = "jbba"
    scheduler_address: str = "127.0.0.1:50051"
    bandwidth_hz: float = 100e6
    min_agents: int = 0  # 0: as many as there are blocks
    report_wait_s: float = 2.0
    round_timeout_s: float = 300.0
    heartbeat_interval_s: float = 2.0
    liveness_timeout_s: float = 10.0
    checkpoint_dir: Path = Path("deft-run/checkpoints")
    history_path: Path | None = None
    resume: bool = False


class ReportRejected(ValueError):
    pass


@dataclass
class PendingReport:
    device_id: str
    report: coordinator_pb2.ResourceReport
    ready: threading.Event = field(default_factory=threading.Event)
    instruction: coordinator_pb2.RoundInstruction | None = None


@dataclass
class RunningRound:
    number: int
    weights: dict[str, np.ndarray]
    collector: RoundCollector
    started: float


def spectral_efficiency(
    report: coordinator_pb2.ResourceReport, bandwidth_hz: float, blocks: int
) -> float:
    """r_k from the report: the channel's own, else a measured rate over an equal share."""
    channel = report.channel
    if channel.spectral_efficiency > 0:
        return channel.spectral_efficiency
    if channel.measured_uplink_bps > 0:
        return channel.measured_uplink_bps / (bandwidth_hz / blocks)
    return 1.0  # nothing known yet (measured channel before its first upload)


def validate_report(report: coordinator_pb2.ResourceReport, blocks: int) -> None:
    """Raise ReportRejected naming the first malformed field."""

    def finite(value: float, name: str) -> None:
        if not math.isfinite(value) or value < 0:
            raise ReportRejected(f"{name}: must be a finite number >= 0, got {value}")

    finite(report.available_memory_bytes, "available_memory_bytes")
    for name in ("channel_gain", "spectral_efficiency", "measured_uplink_bps"):
        finite(getattr(report.channel, name), f"channel.{name}")
    if not math.isfinite(report.channel.snr_db):
        raise ReportRejected("channel.snr_db: must be finite")
    if sorted(cost.block for cost in report.block_costs) != list(range(1, blocks + 1)):
        raise ReportRejected(f"block_costs: need one entry for each block 1..{blocks}")
    for cost in report.block_costs:
        if not math.isfinite(cost.seconds_per_iteration) or cost.seconds_per_iteration <= 0:
            raise ReportRejected(f"block_costs[{cost.block}].seconds_per_iteration: must be > 0")
        finite(cost.peak_memory_bytes, f"block_costs[{cost.block}].peak_memory_bytes")


class RoundEngine:
    def __init__(
        self,
        config: CoordinatorConfig,
        state: TrainingState,
        registry: AgentRegistry,
        allocate: Callable[[scheduler_pb2.AllocateRequest], scheduler_pb2.AllocateResponse],
        metrics: CoordinatorMetrics,
        spec: TaskSpec,
        dev: EncodedSplit,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        on_baseline: Callable[[dict[str, Any]], None] | None = None,
        on_allocation: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.registry = registry
        self.allocate = allocate
        self.metrics = metrics
        self.spec = spec
        self.dev = dev
        self.on_round = on_round
        self.on_baseline = on_baseline
        self.on_allocation = on_allocation  # device -> allotted uplink rate B_k r_k, bit/s
        self.blocks = state.loaded.num_blocks
        self.payload_bits = state.loaded.block_payload_bits(1)
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.current: RunningRound | None = None
        self.error: Exception | None = None
        self.told_finished: set[str] = set()  # agents that have heard "training is over"
        self._lock = threading.Condition()
        self._pending: dict[str, PendingReport] = {}

    # -- called by gRPC handlers -------------------------------------------------------------
    def submit_report(
        self, device_id: str, report: coordinator_pb2.ResourceReport, timeout_s: float = 600.0
    ) -> coordinator_pb2.RoundInstruction:
        validate_report(report, self.blocks)
        if self.finished.is_set():
            with self._lock:
                self.told_finished.add(device_id)
            return coordinator_pb2.RoundInstruction(round=self.state.round, finished=True)
        pending = PendingReport(device_id, report)
        with self._lock:
            replaced = self._pending.get(device_id)
            if replaced is not None:  # an agent that reconnected: its old wait ends now
                replaced.instruction = coordinator_pb2.RoundInstruction(round=self.state.round + 1)
                replaced.ready.set()
            self._pending[device_id] = pending
            self._lock.notify_all()
        if not pending.ready.wait(timeout_s):
            with self._lock:
                if self._pending.get(device_id) is pending:
                    del self._pending[device_id]
            return coordinator_pb2.RoundInstruction(round=self.state.round + 1)
        assert pending.instruction is not None
        return pending.instruction

    def weights_for(self, device_id: str, round_number: int) -> dict[str, np.ndarray]:
        running = self.current
        if running is None or running.number != round_number:
            raise LookupError(f"round {round_number} is not running")
        if device_id not in running.collector.assignment:
            raise PermissionError(f"device {device_id!r} has no block in round {round_number}")
        return running.weights

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        """Run rounds until done; an unexpected error ends training and is kept in `error`."""
        try:
            if self.state.round == 0 and self.state.baseline is None:
                self.state.baseline = evaluate(self.state.loaded, self.dev, self.spec)
                if self.on_baseline:
                    self.on_baseline(self.state.baseline)
            while self.state.round < self.config.rounds and not self.stop.is_set():
                self.run_round(self.state.round + 1)
        except Exception as error:
            log.exception("round engine failed in round %d", self.state.round + 1)
            self.error = error
        finally:
            self.finished.set()
            self._release_all(finished=True)

    def _needed_agents(self) -> int:
        return max(self.config.min_agents, self.blocks)

    def _release_all(self, finished: bool = False) -> None:
        with self._lock:
            if finished:
                self.told_finished |= set(self._pending)
            for pending in self._pending.values():
                pending.instruction = coordinator_pb2.RoundInstruction(
                    round=self.state.round + 1, finished=finished
                )
                pending.ready.set()
            self._pending.clear()

    def wait_for_farewells(self, timeout_s: float) -> set[str]:
        """After training, wait (up to timeout_s) until every live agent has heard "finished",
        so none is left retrying a vanished coordinator. Returns the agents that never did."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = {record.device_id for record in self.registry.live()}
            with self._lock:
                waiting = live - self.told_finished
            if not waiting or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.2)

    def collect_reports(self) -> list[PendingReport]:
        """Wait for enough live agents to report, then briefly for the remaining live ones."""
        needed = self._needed_agents()
        enough_since: float | None = None
        last_notice = 0.0
        while not self.stop.is_set():
            live = {record.device_id for record in self.registry.live()}
            self.metrics.live_agents.set(len(live))
            with self._lock:
                reported = [p for d, p in self._pending.items() if d in live]
                if len(reported) >= needed:
                    enough_since = enough_since or time.monotonic()
                    everyone = len(reported) >= len(live)
                    if everyone or time.monotonic() - enough_since >= self.config.report_wait_s:
                        for pending in reported:
                            del self._pending[pending.device_id]
                        return reported
                else:
                    enough_since = None
                    if time.monotonic() - last_notice > 10:
                        log.info(
                            "waiting for agents: %d of %d needed have reported (%d live)",
                            len(reported),
                            needed,
                            len(live),
                        )
                        last_notice = time.monotonic()
                self._lock.wait(timeout=0.2)
        return []

    def build_request(self, reports: list[PendingReport]) -> scheduler_pb2.AllocateRequest:
        block_memory = np.zeros(self.blocks)
        devices = []
        for pending in reports:
            costs = sorted(pending.report.block_costs, key=lambda c: c.block)
            block_memory = np.maximum(block_memory, [c.peak_memory_bytes for c in costs])
            devices.append(
                scheduler_pb2.DeviceReport(
                    id=pending.device_id,
                    memory_bytes=pending.report.available_memory_bytes,
                    spectral_efficiency=spectral_efficiency(
                        pending.report, self.config.bandwidth_hz, self.blocks
                    ),
                    block_seconds=[c.seconds_per_iteration for c in costs],
                )
            )
        return scheduler_pb2.AllocateRequest(
            policy=self.config.policy,
            blocks=self.blocks,
            # The largest requirement any device measured: conservative across hardware.
            block_memory_bytes=block_memory.tolist(),
            local_iterations=self.config.local_iterations,
            payload_bits=float(self.payload_bits),
            bandwidth_hz=self.config.bandwidth_hz,
            devices=devices,
            seed=self.config.seed + self.state.round,
        )

    def run_round(self, number: int) -> None:
        reports = self.collect_reports()
        if not reports:
            return
        phases: dict[str, float] = {}  # the coordinator's own critical-path work, seconds
        asked = time.perf_counter()
        request = self.build_request(reports)
        try:
            allocation = self.allocate(request)
        except grpc.RpcError as error:
            log.warning(
                "round %d: scheduler: %s: %s; waiting for the next reports",
                number,
                error.code().name,
                error.details(),
            )
            self._sit_out(reports, number)
            self.stop.wait(1.0)
            return
        phases["schedule"] = time.perf_counter() - asked
        self.metrics.scheduler_call.set(phases["schedule"])
        if self.on_allocation:  # e.g. re-shape the testbed's links before anyone uploads
            shaping = time.perf_counter()
            efficiency = {device.id: device.spectral_efficiency for device in request.devices}
            self.on_allocation(
                {
                    entry.device: entry.bandwidth_hz * efficiency[entry.device]
                    for entry in allocation.assignment
                }
            )
            phases["shape"] = time.perf_counter() - shaping
        self.metrics.solve.set(allocation.solve_seconds)
        dispatching = time.perf_counter()
        assignment = {entry.device: entry.block for entry in allocation.assignment}
        by_device = {entry.device: entry for entry in allocation.assignment}
        started = time.monotonic()
        deadline_unix = time.time() + self.config.round_timeout_s
        collector = RoundCollector(
            number,
            assignment,
            self.state.shapes(),
            {b: names for b, names in self.state.loaded.blocks.items() if b != HEAD},
            self.state.loaded.blocks[HEAD],
            started + self.config.round_timeout_s,
        )
        self.current = RunningRound(number, self.state.snapshot(), collector, started)
        for pending in reports:
            entry = by_device.get(pending.device_id)
            pending.instruction = coordinator_pb2.RoundInstruction(
                round=number,
                block=entry.block if entry else 0,
                bandwidth_hz=entry.bandwidth_hz if entry else 0.0,
                local_iterations=self.config.local_iterations,
                deadline_unix_s=deadline_unix,
                modelled_latency_s=entry.latency_s if entry else 0.0,
            )
            pending.ready.set()
        phases["dispatch"] = time.perf_counter() - dispatching
        self._wait_for_uploads(collector, started)
        applying = time.perf_counter()
        gradients = collector.aggregate()
        uploads = collector.uploads
        wall = time.monotonic() - started
        if gradients:
            self.state.apply(gradients)
        self.state.round = number
        phases["apply"] = time.perf_counter() - applying
        record = self._record(number, reports, allocation, uploads, wall)
        final = number == self.config.rounds  # the final adapters are always evaluated
        if final or (self.config.eval_every and number % self.config.eval_every == 0):
            evaluating = time.perf_counter()
            record["eval"] = evaluate(self.state.loaded, self.dev, self.spec)
            phases["evaluate"] = time.perf_counter() - evaluating
        record["coordinator_s"] = phases
        self.state.history.append(record)
        saving = time.perf_counter()
        self.state.save(self.config.checkpoint_dir)
        phases["checkpoint"] = time.perf_counter() - saving
        self._export(record, request, by_device, uploads)
        self.current = None
        if self.on_round:
            self.on_round(record)

    def _sit_out(self, reports: list[PendingReport], number: int) -> None:
        for pending in reports:
            pending.instruction = coordinator_pb2.RoundInstruction(round=number)
            pending.ready.set()

    def _wait_for_uploads(self, collector: RoundCollector, started: float) -> None:
        deadline = started + self.config.round_timeout_s
        while not self.stop.is_set():
            if collector.wait(timeout=min(0.5, deadline - time.monotonic())):
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "round %d: deadline passed, missing %s",
                    collector.round,
                    sorted(collector.missing_devices()),
                )
                return
            live = {record.device_id for record in self.registry.live()}
            if not collector.missing_devices() & live:
                log.warning(
                    "round %d: agents %s stopped responding; closing the round",
                    collector.round,
                    sorted(collector.missing_devices()),
                )
                return

    def _record(
        self,
        number: int,
        reports: list[PendingReport],
        allocation: scheduler_pb2.AllocateResponse,
        uploads: dict[str, Any],
        wall: float,
    ) -> dict[str, Any]:
        return {
            "round": number,
            "policy": allocation.policy,
            "modelled_latency_s": allocation.latency_s,
            "measured_wall_s": wall,
            "solve_seconds": allocation.solve_seconds,
            "reported_devices": len(reports),
            "assignment": [
                {
                    "block": entry.block,
                    "device": entry.device,
                    "bandwidth_hz": entry.bandwidth_hz,
                    "modelled_latency_s": entry.latency_s,
                    "modelled_compute_s": entry.compute_s,
                    "modelled_upload_s": entry.upload_s,
                    "compute_s": uploads[entry.device].compute_s
                    if entry.device in uploads
                    else None,
                    "upload_s": uploads[entry.device].upload_s if entry.device in uploads else None,
                }
                for entry in allocation.assignment
            ],
            "blocks_updated": sorted(u.block for u in uploads.values()),
            "train_loss": float(np.mean([u.train_loss for u in uploads.values()]))
            if uploads
            else None,
        }

    def _export(
        self,
        record: dict[str, Any],
        request: scheduler_pb2.AllocateRequest,
        by_device: dict[str, Any],
        uploads: dict[str, Any],
    ) -> None:
        m = self.metrics
        m.round.set(record["round"])
        m.rounds.inc()
        m.round_latency.labels("measured").set(record["measured_wall_s"])
        m.round_latency.labels("modelled").set(record["modelled_latency_s"])
        m.round_wall.observe(record["measured_wall_s"])
        for reported in request.devices:  # what the scheduler was told, device by device
            device = reported.id
            entry = by_device.get(device)
            m.device_block.labels(device).set(entry.block if entry else 0)
            m.device_bandwidth.labels(device).set(entry.bandwidth_hz if entry else 0.0)
            m.device_modelled.labels(device).set(entry.latency_s if entry else 0.0)
            m.device_memory.labels(device).set(reported.memory_bytes)
            m.device_efficiency.labels(device).set(reported.spectral_efficiency)
            upload = uploads.get(device)
            m.device_compute.labels(device).set(upload.compute_s if upload else 0.0)
            m.device_upload.labels(device).set(upload.upload_s if upload else 0.0)
        if record["train_loss"] is not None:
            m.loss.set(record["train_loss"])
        if "eval" in record:
            m.eval_loss.set(record["eval"]["loss"])
            for key, value in record["eval"].items():
                if key not in ("loss", "metric", "metric_name"):
                    m.eval_metric.labels(key).set(value)
        if self.config.history_path:
            self.config.history_path.parent.mkdir(parents=True, exist_ok=True)
            document = {"baseline": self.state.baseline, "rounds": self.state.history}
            temporary = self.config.history_path.with_suffix(".tmp")
            temporary.write_text(json.dumps(document, indent=1))
            temporary.replace(self.config.history_path)  # a crash never leaves half a file

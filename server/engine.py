"""The round engine: the paper's Algorithm 1 on the coordinator's own types, with no gRPC or
protobuf in it (the wire layer converts; the allocator hides the scheduler).

A round is cut into named phases, each a method, each timed into the round record:
collect reports -> allocate -> (shape) -> dispatch -> collect uploads -> apply -> evaluate ->
checkpoint -> export. It runs on the coordinator's event loop: reports and uploads are awaited,
never a thread each, and the heavy phases (allocation, Adam, evaluation, checkpoint) run in
worker threads so heartbeats and registrations are answered meanwhile.

Seams for what comes next: `allocate` is the one place that asks the allocator (a fallback
allocator wraps another), and `RunningRound` owns its collector, so a block can be re-dispatched
inside a round without touching the other phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from lola_deft.server.aggregation import RoundCollector
from lola_deft.server.allocator import AllocationFailed, Allocator
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.errors import NotAssigned, NotNow
from lola_deft.server.messages import (
    Allocation,
    AllocationRequest,
    AssignmentRecord,
    DeviceOffer,
    Evaluation,
    Instruction,
    ResourceReport,
    RoundRecord,
    RunHistory,
    Upload,
    UploadAck,
    UploadHeader,
    UploadPlan,
)
from lola_deft.server.registry import AgentRegistry
from lola_deft.server.validation import validate_report

log = logging.getLogger("deft.coordinator")
T = TypeVar("T")
ANSWER_BATCH = 32


class Trainer(Protocol):
    """The model side of the coordinator: its adapters and what a round does with them."""

    blocks: int
    payload_bits: float
    shapes: dict[str, tuple[int, ...]]
    block_names: dict[int, list[str]]
    head_names: list[str]

    def snapshot(self) -> dict[str, np.ndarray]: ...

    def apply(self, gradients: dict[str, np.ndarray]) -> None: ...

    def evaluate(self) -> Evaluation: ...

    def checkpoint(self, completed: int, history: RunHistory) -> None: ...


@dataclass
class EngineHooks:
    """Who else hears of a round: progress lines, the testbed's link shaping, exporters."""

    on_baseline: Callable[[Evaluation], None] | None = None
    on_allocation: Callable[[dict[str, float]], None] | None = None  # device -> B_k r_k bit/s
    on_round: list[Callable[[RoundRecord, AllocationRequest], None]] = field(default_factory=list)


@dataclass
class PendingReport:
    report: ResourceReport
    answer: asyncio.Future[Instruction]


@dataclass
class RunningRound:
    number: int
    weights: dict[str, np.ndarray]
    collector: RoundCollector
    started: float
    reports: list[ResourceReport]
    request: AllocationRequest
    allocation: Allocation


def spectral_efficiency(report: ResourceReport, bandwidth_hz: float, blocks: int) -> float:
    """r_k from the report: the channel's own, else a measured rate over an equal share."""
    if report.spectral_efficiency > 0:
        return report.spectral_efficiency
    if report.measured_uplink_bps > 0:
        return report.measured_uplink_bps / (bandwidth_hz / blocks)
    return 1.0  # nothing known yet (measured channel before its first upload)


class RoundEngine:
    def __init__(
        self,
        config: CoordinatorConfig,
        trainer: Trainer,
        registry: AgentRegistry,
        allocator: Allocator,
        hooks: EngineHooks | None = None,
        *,
        completed: int = 0,
        history: RunHistory | None = None,
    ) -> None:
        self.config = config
        self.trainer = trainer
        self.registry = registry
        self.allocator = allocator
        self.hooks = hooks or EngineHooks()
        self.completed = completed  # rounds done (restored on --resume)
        self.history = history or RunHistory(None, [])
        self.blocks = trainer.blocks
        self.current: RunningRound | None = None
        self.finished = threading.Event()  # read by other threads (CLI, tests)
        self.error: BaseException | None = None
        self.told_finished: set[str] = set()  # agents that have heard "training is over"
        self._stopping = False
        self._pending: dict[str, PendingReport] = {}
        self._reports_changed = asyncio.Event()

    # -- what the agents' calls reach (through the coordinator facade) -------------------------
    @property
    def next_round(self) -> int:
        return self.completed + 1

    async def submit_report(self, report: ResourceReport) -> Instruction:
        """Wait (at most config.report_poll_s) for this device's instruction. A cancelled call
        leaves nothing behind; a newer report from the same device ends the older wait."""
        validate_report(report, self.blocks)
        device_id = report.device_id
        if self.finished.is_set():
            self.told_finished.add(device_id)
            return Instruction(round=self.completed, finished=True)
        replaced = self._pending.pop(device_id, None)
        if replaced is not None:
            self._settle(replaced, Instruction(round=self.next_round))
        loop = asyncio.get_running_loop()
        pending = PendingReport(report, loop.create_future())
        self._pending[device_id] = pending
        self._reports_changed.set()
        # One timer, no extra task per waiting report: at the poll bound, "report again".
        timer = loop.call_later(
            self.config.report_poll_s, self._settle, pending, Instruction(round=self.next_round)
        )
        try:
            instruction = await pending.answer
        finally:
            timer.cancel()
            if self._pending.get(device_id) is pending:
                del self._pending[device_id]
        if instruction.finished:
            self.told_finished.add(device_id)
        return instruction

    @staticmethod
    def _settle(pending: PendingReport, instruction: Instruction) -> None:
        if not pending.answer.done():
            pending.answer.set_result(instruction)

    def waiting_reports(self) -> int:
        """Reports waiting for their instruction now."""
        return len(self._pending)

    def weights_for(self, device_id: str, round_number: int) -> dict[str, np.ndarray]:
        running = self._running(round_number)
        if device_id not in running.collector.assignment:
            raise NotAssigned(f"this device has no block in round {round_number}")
        return running.weights

    def round_deadline(self, round_number: int) -> float:
        return self._running(round_number).collector.deadline

    def plan_upload(self, device_id: str, header: UploadHeader) -> UploadPlan:
        return self._running(header.round).collector.plan(device_id, header)

    def abandon_upload(self, device_id: str, round_number: int) -> None:
        running = self.current
        if running is not None and running.number == round_number:
            running.collector.abandon(device_id)

    def accept_upload(self, round_number: int, upload: Upload) -> UploadAck:
        return self._running(round_number).collector.accept(upload)

    def _running(self, round_number: int) -> RunningRound:
        running = self.current
        if running is None or running.number != round_number:
            raise NotNow(f"round {round_number} is not running")
        return running

    def stop(self) -> None:
        self._stopping = True
        self._reports_changed.set()
        if self.current is not None:
            self.current.collector.complete.set()

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run rounds until done; an unexpected error ends training and is kept in `error`."""
        try:
            if self.completed == 0 and self.history.baseline is None:
                self.history.baseline = await asyncio.to_thread(self.trainer.evaluate)
                if self.hooks.on_baseline:
                    self.hooks.on_baseline(self.history.baseline)
            while self.completed < self.config.rounds and not self._stopping:
                await self.run_round(self.next_round)
        except Exception as error:
            log.exception("round engine failed in round %d", self.next_round)
            self.error = error
        finally:
            self.finished.set()
            self._release_all(finished=True)

    def _release_all(self, finished: bool = False) -> None:
        """Answer every waiting report (their calls note who heard "finished")."""
        for pending in self._pending.values():
            self._settle(pending, Instruction(round=self.next_round, finished=finished))
        self._pending.clear()

    def unfinished_agents(self) -> set[str]:
        """Live agents that have not yet heard that training is over."""
        return {r.device_id for r in self.registry.live()} - self.told_finished

    async def run_round(self, number: int) -> None:
        phases: dict[str, float] = {}
        reports = await self.collect_reports()
        if not reports:
            return
        request = self.build_request(reports, number)
        allocation = await self._timed(phases, "schedule", self.allocate(request, number))
        if allocation is None:
            await self._answer(reports, lambda report: Instruction(round=number))
            await asyncio.sleep(1.0)
            return
        if self.hooks.on_allocation:  # e.g. re-shape the testbed's links before anyone uploads
            rates = self.allotted_rates(request, allocation)
            await self._timed(phases, "shape", asyncio.to_thread(self.hooks.on_allocation, rates))
        running = await self._timed(
            phases, "dispatch", self.dispatch(number, reports, request, allocation)
        )
        await self.collect_uploads(running)
        uploads = await self._timed(phases, "apply", self.apply(running))
        record = self.record(running, uploads)
        if self._due_for_evaluation(number):
            record.eval = await self._timed(
                phases, "evaluate", asyncio.to_thread(self.trainer.evaluate)
            )
        record.coordinator_s = phases
        self.history.rounds.append(record)
        await self._timed(
            phases, "checkpoint", asyncio.to_thread(self.trainer.checkpoint, number, self.history)
        )
        self.current = None
        for hook in self.hooks.on_round:
            hook(record, request)

    async def _timed(self, phases: dict[str, float], name: str, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            phases[name] = time.perf_counter() - started

    def _due_for_evaluation(self, number: int) -> bool:
        final = number == self.config.rounds  # the final adapters are always evaluated
        return final or bool(self.config.eval_every and number % self.config.eval_every == 0)

    # -- phases --------------------------------------------------------------------------------
    def _needed_agents(self) -> int:
        return max(self.config.min_agents, self.blocks)

    async def collect_reports(self) -> list[ResourceReport]:
        """Wait for enough live agents to report, then briefly for the remaining live ones."""
        needed = self._needed_agents()
        enough_since: float | None = None
        last_notice = 0.0
        while not self._stopping:
            self.registry.forget_departed()
            live = {record.device_id for record in self.registry.live()}
            reported = [d for d in self._pending if d in live]
            now = time.monotonic()
            if len(reported) >= needed:
                enough_since = enough_since or now
                if len(reported) >= len(live) or now - enough_since >= self.config.report_wait_s:
                    return [self._pending[d].report for d in reported]
            else:
                enough_since = None
                if now - last_notice > 10:
                    log.info(
                        "waiting for agents: %d of %d needed have reported (%d live)",
                        len(reported),
                        needed,
                        len(live),
                    )
                    last_notice = now
            self._reports_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reports_changed.wait(), timeout=0.2)
            await asyncio.sleep(0.02)  # let a burst of reports land before counting again
        return []

    def build_request(self, reports: list[ResourceReport], number: int) -> AllocationRequest:
        # The largest requirement any device measured: conservative across hardware.
        block_memory = np.max([report.block_memory_bytes for report in reports], axis=0)
        devices = [
            DeviceOffer(
                id=report.device_id,
                memory_bytes=report.available_memory_bytes,
                spectral_efficiency=spectral_efficiency(
                    report, self.config.bandwidth_hz, self.blocks
                ),
                block_seconds=report.block_seconds,
            )
            for report in reports
        ]
        return AllocationRequest(
            policy=self.config.policy,
            blocks=self.blocks,
            block_memory_bytes=tuple(float(m) for m in block_memory),
            local_iterations=self.config.local_iterations,
            payload_bits=float(self.trainer.payload_bits),
            bandwidth_hz=self.config.bandwidth_hz,
            devices=tuple(devices),
            seed=self.config.seed + number - 1,
        )

    async def allocate(self, request: AllocationRequest, number: int) -> Allocation | None:
        """The allocator's answer, or None (every reporting agent sits the round out)."""
        try:
            return await asyncio.to_thread(self.allocator.allocate, request)
        except AllocationFailed as error:
            log.warning("round %d: %s; waiting for the next reports", number, error)
            return None

    @staticmethod
    def allotted_rates(request: AllocationRequest, allocation: Allocation) -> dict[str, float]:
        efficiency = {device.id: device.spectral_efficiency for device in request.devices}
        return {a.device: a.bandwidth_hz * efficiency[a.device] for a in allocation.assignment}

    async def dispatch(
        self,
        number: int,
        reports: list[ResourceReport],
        request: AllocationRequest,
        allocation: Allocation,
    ) -> RunningRound:
        """Open the round (weights to serve, collector) and answer every waiting report."""
        started = time.monotonic()
        by_device = {entry.device: entry for entry in allocation.assignment}
        collector = RoundCollector(
            number,
            {entry.device: entry.block for entry in allocation.assignment},
            self.trainer.shapes,
            self.trainer.block_names,
            self.trainer.head_names,
            started + self.config.round_timeout_s,
        )
        running = RunningRound(
            number, self.trainer.snapshot(), collector, started, reports, request, allocation
        )
        self.current = running
        deadline_unix = time.time() + self.config.round_timeout_s

        def instruction(report: ResourceReport) -> Instruction:
            entry = by_device.get(report.device_id)
            if entry is None:
                return Instruction(round=number, local_iterations=self.config.local_iterations)
            return Instruction(
                round=number,
                block=entry.block,
                bandwidth_hz=entry.bandwidth_hz,
                local_iterations=self.config.local_iterations,
                deadline_unix_s=deadline_unix,
                modelled_latency_s=entry.latency_s,
            )

        await self._answer(reports, instruction)
        return running

    async def _answer(
        self, reports: list[ResourceReport], instruction: Callable[[ResourceReport], Instruction]
    ) -> None:
        """Answer waiting reports a batch at a time, letting the loop serve other calls
        (heartbeats) between batches instead of behind hundreds of replies."""
        for index, report in enumerate(reports):
            pending = self._pending.pop(report.device_id, None)
            if pending is not None:
                self._settle(pending, instruction(report))
            if index % ANSWER_BATCH == ANSWER_BATCH - 1:
                await asyncio.sleep(0)

    async def collect_uploads(self, running: RunningRound) -> None:
        """Until every assigned device uploaded, the deadline passed, or the missing ones died."""
        collector = running.collector
        deadline = running.started + self.config.round_timeout_s
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "round %d: deadline passed, missing %s",
                    running.number,
                    sorted(collector.missing_devices()),
                )
                return
            try:
                await asyncio.wait_for(collector.complete.wait(), timeout=min(0.5, remaining))
                return
            except asyncio.TimeoutError:
                pass
            missing = collector.missing_devices()
            if not any(self.registry.is_live(device) for device in missing):
                log.warning(
                    "round %d: agents %s stopped responding; closing the round",
                    running.number,
                    sorted(missing),
                )
                return

    async def apply(self, running: RunningRound) -> dict[str, Upload]:
        """Close the round and apply what arrived with Adam."""
        uploads = running.collector.close()
        gradients = running.collector.aggregate()
        if gradients:
            await asyncio.to_thread(self.trainer.apply, gradients)
        self.completed = running.number
        return uploads

    def record(self, running: RunningRound, uploads: dict[str, Upload]) -> RoundRecord:
        allocation = running.allocation
        return RoundRecord(
            round=running.number,
            policy=allocation.policy,
            modelled_latency_s=allocation.latency_s,
            measured_wall_s=time.monotonic() - running.started,
            solve_seconds=allocation.solve_seconds,
            reported_devices=len(running.reports),
            assignment=[
                AssignmentRecord(
                    block=entry.block,
                    device=entry.device,
                    bandwidth_hz=entry.bandwidth_hz,
                    modelled_latency_s=entry.latency_s,
                    modelled_compute_s=entry.compute_s,
                    modelled_upload_s=entry.upload_s,
                    compute_s=uploads[entry.device].compute_s if entry.device in uploads else None,
                    upload_s=uploads[entry.device].upload_s if entry.device in uploads else None,
                )
                for entry in allocation.assignment
            ],
            blocks_updated=sorted(u.block for u in uploads.values()),
            train_loss=float(np.mean([u.train_loss for u in uploads.values()]))
            if uploads
            else None,
        )

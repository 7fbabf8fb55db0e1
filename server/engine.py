"""The round engine: the paper's Algorithm 1 on the coordinator's own types, with no gRPC or
protobuf in it (the wire layer converts; the allocator hides the scheduler).

A round is cut into named phases, each a method, each timed into the round record:
collect reports -> allocate -> (shape) -> dispatch -> collect uploads -> apply -> evaluate ->
checkpoint -> export. It runs on the coordinator's event loop: reports and uploads are awaited,
never a thread each, and the heavy phases (allocation, Adam, evaluation, checkpoint) run in
worker threads so heartbeats and registrations are answered meanwhile.

Failures cost one block's retry, never the round: a block whose device dies, misses its
deadline or has its upload refused is handed, within the round, to the fastest idle live device
that fits it (one whose report is waiting), with a deadline of its own; the round closes once no
device holds a block. With fewer reporting agents than blocks the round trains as many blocks as
there are agents, the least recently trained first (ties: lower block first), so every block
keeps moving. A step that leaves the model non-finite is undone before any checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from lola_deft.scheduler.bounds import SPECTRAL_EFFICIENCY
from lola_deft.server.aggregation import RoundCollector
from lola_deft.server.allocator import AllocationFailed, Allocator
from lola_deft.server.claims import ClaimChecker
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.errors import InvalidRequest, NonFiniteStep, NotAssigned, NotNow, quote
from lola_deft.server.gradient_guard import GradientGuard
from lola_deft.server.head_training import HeadPolicy
from lola_deft.server.messages import (
    Allocation,
    AllocationRequest,
    Assignment,
    AssignmentRecord,
    ClaimClamp,
    DeviceOffer,
    Evaluation,
    Instruction,
    Reassignment,
    ResourceReport,
    RoundRecord,
    RunHistory,
    Upload,
    UploadAck,
    UploadHeader,
    UploadPlan,
)
from lola_deft.server.pipeline import PipelineJob
from lola_deft.server.pipeline_planning import (
    BackboneCosts,
    pipeline_document,
    pipeline_job,
    shared_allocation,
    shares_document,
)
from lola_deft.server.registry import AgentRegistry
from lola_deft.server.validation import validate_report

log = logging.getLogger("deft.coordinator")
T = TypeVar("T")
ANSWER_BATCH = 32


class Trainer(Protocol):
    """The model side of the coordinator: its adapters and what a round does with them."""

    blocks: int
    block_bits: float  # one block's LoRA gradient as uploaded (the paper's S)
    head_bits: float  # the classification head's gradient as uploaded
    shapes: dict[str, tuple[int, ...]]
    block_names: dict[int, list[str]]
    head_names: list[str]
    # Blocks are slots that each train the whole model (PAC+): each device's memory need is
    # its own report's, not the largest any device measured.
    independent_slots: bool

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
    reassignments: list[Reassignment] = field(default_factory=list)
    clamped: list[ClaimClamp] = field(default_factory=list)

    def entry_of(self, block: int) -> Assignment:
        return next(entry for entry in self.allocation.assignment if entry.block == block)


def spectral_efficiency(report: ResourceReport, bandwidth_hz: float, blocks: int) -> float:
    """r_k from the report: the channel's own, else a measured rate over an equal share of the
    band; 0 when the device knows nothing yet (a measured channel before its first upload)."""
    if report.spectral_efficiency > 0:
        return report.spectral_efficiency
    if report.measured_uplink_bps > 0:
        # A rate over a narrow band can imply an r_k no radio has: keep it schedulable.
        rate = report.measured_uplink_bps / (bandwidth_hz / blocks)
        return float(np.clip(rate, SPECTRAL_EFFICIENCY.low * 2, SPECTRAL_EFFICIENCY.high))
    return 0.0


def channel_efficiencies(
    reports: list[ResourceReport], bandwidth_hz: float, blocks: int, prior_uplink_bps: float
) -> list[float]:
    """r_k for every report; a device that knows nothing of its channel yet gets a prior: the
    median of the devices that do (they share the medium), else `prior_uplink_bps` over an
    equal share of the band."""
    known = [spectral_efficiency(report, bandwidth_hz, blocks) for report in reports]
    measured = [value for value in known if value > 0]
    prior = float(np.median(measured)) if measured else prior_uplink_bps / (bandwidth_hz / blocks)
    return [value if value > 0 else prior for value in known]


def _block(entry: Assignment) -> int:
    return entry.block


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
        pipeline_costs: Callable[[], BackboneCosts] | None = None,
    ) -> None:
        """`pipeline_costs` (PAC+): the backbone's reference costs, for planning pipelines that
        fill the caches of devices the backbone does not fit (None: no pipelines)."""
        self.config = config
        self.pipeline_costs = pipeline_costs
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
        self.guard = GradientGuard(config.max_grad_norm, config.grad_norm_factor)
        self.claims = ClaimChecker(registry.hardware_class)
        self.head = HeadPolicy(config.head_training, config.head_warmup_rounds)
        self.rounds_dispatched = 0  # by this process
        self.last_trained: dict[int, int] = {}  # block -> last round that updated it
        self.pipelines: dict[str, PipelineJob] = {}  # PAC+'s cache-filling pipelines, by job
        for record in self.history.rounds:
            for block in record.blocks_updated:
                self.last_trained[block] = record.round

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
            raise NotAssigned(f"this device holds no block in round {round_number}")
        return running.weights

    def round_deadline(self, device_id: str, round_number: int) -> float:
        return self._running(round_number).collector.deadline_for(device_id)

    def plan_upload(self, device_id: str, header: UploadHeader) -> UploadPlan:
        return self._running(header.round).collector.plan(device_id, header)

    def abandon_upload(self, device_id: str, round_number: int, kind: str, reason: str) -> None:
        running = self.current
        if running is None or running.number != round_number:
            return
        held = running.collector.assignment.get(device_id)
        running.collector.abandon(device_id, kind, reason)
        if held is not None and device_id not in running.collector.assignment:
            log.warning("round %d: %s lost block %d: %s", round_number, device_id, held, reason)

    def accept_upload(self, round_number: int, upload: Upload) -> UploadAck:
        try:
            return self._running(round_number).collector.accept(upload)
        except InvalidRequest as error:
            log.warning(
                "round %d: refused the upload of %s for block %d: %s",
                round_number,
                upload.device_id,
                upload.block,
                error,
            )
            raise

    def pipeline(self, job: str) -> PipelineJob:
        found = self.pipelines.get(job)
        if found is None:
            raise NotNow(f"pipeline {quote(job)} is not running")
        return found

    def _running(self, round_number: int) -> RunningRound:
        running = self.current
        if running is None or running.number != round_number:
            raise NotNow(f"round {round_number} is not running")
        return running

    def stop(self) -> None:
        self._stopping = True
        self._reports_changed.set()
        if self.current is not None:
            self.current.collector.changed.set()

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run rounds until done; an unexpected error ends training and is kept in `error`."""
        # PAC+ only: LoLa-DEFT runs have no pipelines to watch.
        watcher = None
        if self.pipeline_costs is not None:
            watcher = asyncio.create_task(self._watch_pipelines())
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
            if watcher is not None:
                watcher.cancel()
            for job in self.pipelines.values():
                job.fail("training is over")
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
        reports = await self.start_pipelines(reports, number)
        if not reports:
            return
        self.claims.retain(self.registry.__contains__)
        reports, clamped = self.claims.plausible(reports)
        blocks = self.choose_blocks(len(reports))
        request = self.build_request(reports, number, blocks)
        allocation = await self._timed(phases, "schedule", self.allocate(request, number))
        if allocation is not None and len(blocks) < self.blocks:
            allocation = self.rename_blocks(allocation, blocks)
        if allocation is not None:
            allocation = self.head.adjust(
                allocation, number, self.trainer.block_bits, self.trainer.head_bits
            )
        iterations: dict[str, int] = {}
        if allocation is not None and self.trainer.independent_slots:
            allocation, iterations = await self.share_work(request, allocation, number)
        if allocation is None:
            await self._answer(reports, lambda report: Instruction(round=number))
            await asyncio.sleep(1.0)
            return
        if self.hooks.on_allocation:  # e.g. re-shape the testbed's links before anyone uploads
            rates = self.allotted_rates(request, allocation)
            await self._timed(phases, "shape", asyncio.to_thread(self.hooks.on_allocation, rates))
        running = await self._timed(
            phases, "dispatch", self.dispatch(number, reports, request, allocation, iterations)
        )
        running.clamped = clamped
        self.rounds_dispatched += 1
        await self.collect_uploads(running)
        uploads, rolled_back = await self._timed(phases, "apply", self.apply(running))
        record = self.record(running, uploads, rolled_back)
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

    # -- PAC+ ----------------------------------------------------------------------------------
    async def share_work(
        self, request: AllocationRequest, allocation: Allocation, number: int
    ) -> tuple[Allocation, dict[str, int]]:
        """PAC+'s data-parallel shares (pipeline_planning.shares_document): the round's
        mini-batches split over the slots' devices by the scheduler's PlanShares. Returns the
        allocation with its modelled compute following, and mini-batches per device (empty: M
        each, when there is one device or the plan fails)."""
        if len(allocation.assignment) < 2:
            return allocation, {}
        batch, iterations = self.config.batch_size, self.config.local_iterations
        document = shares_document(request, allocation, batch, iterations)
        try:
            plan = await asyncio.to_thread(self.allocator.plan_shares, document)
        except AllocationFailed as error:
            log.warning("round %d: no shares (%s); M mini-batches each", number, error)
            return allocation, {}
        return shared_allocation(request, allocation, plan, batch)

    # -- PAC+ pipelines ------------------------------------------------------------------------
    async def start_pipelines(
        self, reports: list[ResourceReport], number: int
    ) -> list[ResourceReport]:
        """PAC+: a device whose backbone does not fit, with samples not cached yet, gets a
        pipeline of reporting devices that fills its cache (planned by the scheduler); those
        devices leave this round's slots to the others. Returns the reports left for slots."""
        if self.pipeline_costs is None:
            return reports
        busy = {device for job in self.pipelines.values() for device in job.devices}
        owners = [
            report
            for report in reports
            if report.pac is not None
            and report.pac.needs_pipeline
            and report.pac.cold
            and report.device_id not in busy
        ]
        if not owners:
            return reports
        owner = owners[0]
        assert owner.pac is not None
        candidates = [report for report in reports if report.device_id not in busy]
        try:
            costs = await asyncio.to_thread(self.pipeline_costs)
            document = pipeline_document(
                costs, candidates, owner.device_id, self.config.bandwidth_hz
            )
            plan = await asyncio.to_thread(self.allocator.plan_pipeline, document)
        except AllocationFailed as error:
            log.warning(
                "round %d: no pipeline can fill %s's cache: %s", number, owner.device_id, error
            )
            return reports
        uncached = owner.pac.samples - owner.pac.cached_samples
        job, tasks = pipeline_job(plan, costs, uncached, self.config.round_timeout_s)
        if any(device not in self._pending for device in tasks):
            return reports  # one of them stopped waiting meanwhile: plan again next round
        self.pipelines[job.job] = job
        for device, task in tasks.items():
            self._settle(self._pending.pop(device), Instruction(round=number, pipeline=task))
        log.info(
            "round %d: pipeline %s fills %s's cache (%d samples): %s",
            number,
            job.job,
            owner.device_id,
            uncached,
            " ".join(f"{s.device}:{s.first_unit}-{s.last_unit}" for s in job.stages),
        )
        return [report for report in reports if report.device_id not in tasks]

    async def _watch_pipelines(self) -> None:
        """Abort pipelines whose devices die or whose deadline passes; forget ended ones."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for name, job in list(self.pipelines.items()):
                if job.finished() or job.failure is not None:
                    if now > job.deadline:  # kept till then: late calls get a clear answer
                        del self.pipelines[name]
                    continue
                dead = [device for device in job.devices if not self.registry.is_live(device)]
                if dead:
                    job.fail(f"{dead[0]} stopped responding")
                    log.warning("pipeline %s aborted: %s stopped responding", name, dead[0])
                elif now > job.deadline:
                    job.fail("its deadline passed")

    # -- phases --------------------------------------------------------------------------------
    def _needed_agents(self) -> int:
        """This process's first round (also after --resume) waits for --min-agents (default:
        one per block); once rounds run, they go on with whoever is left (choose_blocks)."""
        if self.rounds_dispatched:
            return 1
        return self.config.min_agents or self.blocks

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

    def choose_blocks(self, agents: int) -> list[int]:
        """Every block, or with fewer agents than blocks the `agents` least recently trained
        (never-trained first, then by the round that last updated them; ties: lower block)."""
        every = list(range(1, self.blocks + 1))
        if agents >= self.blocks:
            return every
        order = sorted(every, key=lambda block: (self.last_trained.get(block, 0), block))
        return sorted(order[:agents])

    @staticmethod
    def rename_blocks(allocation: Allocation, blocks: list[int]) -> Allocation:
        """The allocator solved blocks 1..len(blocks): give them their real numbers."""
        return dataclasses.replace(
            allocation,
            assignment=tuple(
                dataclasses.replace(entry, block=blocks[entry.block - 1])
                for entry in allocation.assignment
            ),
        )

    def build_request(
        self, reports: list[ResourceReport], number: int, blocks: list[int] | None = None
    ) -> AllocationRequest:
        """The allocation problem over `blocks` (default: all), numbered 1..len(blocks)."""
        chosen = np.asarray(blocks or range(1, self.blocks + 1)) - 1
        full = len(chosen) == self.blocks
        needs = np.asarray([report.block_memory_bytes for report in reports])[:, chosen]
        # Each device needs what it measured itself (hardware differs; a PAC+ cold cache
        # needs the backbone, a warm one the side network alone), and one device's claim must
        # move no other device: the blocks are given the least need any device reported, and
        # each device offers its memory less its own largest excess over that. A device fits
        # a block in the request only if its memory covers its own need of the block.
        block_memory = needs.min(axis=0)
        offered = [
            report.available_memory_bytes - float((need - block_memory).max())
            for report, need in zip(reports, needs, strict=True)
        ]
        efficiencies = channel_efficiencies(
            reports, self.config.bandwidth_hz, self.blocks, self.config.prior_uplink_bps
        )
        devices = [
            DeviceOffer(
                id=report.device_id,
                memory_bytes=max(memory, 0.0),
                spectral_efficiency=efficiency,
                block_seconds=report.block_seconds
                if full
                else tuple(report.block_seconds[i] for i in chosen),
            )
            for report, efficiency, memory in zip(reports, efficiencies, offered, strict=True)
        ]
        return AllocationRequest(
            policy=self.config.policy,
            blocks=len(chosen),
            block_memory_bytes=tuple(float(m) for m in block_memory),
            local_iterations=self.config.local_iterations,
            payload_bits=self.head.payload_bits(
                number, self.trainer.block_bits, self.trainer.head_bits
            ),
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
        except Exception:  # an allocator bug must cost one round, not the run
            log.exception("round %d: the allocator failed; waiting for the next reports", number)
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
        iterations: dict[str, int] | None = None,
    ) -> RunningRound:
        """Open the round (weights to serve, collector) and answer every waiting report.
        `iterations`: mini-batches per device where the work was shared by speed (PAC+)."""
        started = time.monotonic()
        iterations = iterations or {}
        by_device = {entry.device: entry for entry in allocation.assignment}
        collector = RoundCollector(
            number,
            {entry.device: entry.block for entry in allocation.assignment},
            self.trainer.shapes,
            self.trainer.block_names,
            self.trainer.head_names,
            started + self.config.round_timeout_s,
            guard=self.guard,
            head_combiner=self.config.head_aggregation,
            head_blocks=self.head.carriers(number, [e.block for e in allocation.assignment]),
            weights={e.block: float(iterations[e.device]) for e in allocation.assignment}
            if iterations
            else None,
            holder_deadlines={
                e.device: started + self.holder_allowance(e.latency_s)
                for e in allocation.assignment
            },
        )
        running = RunningRound(
            number, self.trainer.snapshot(), collector, started, reports, request, allocation
        )
        self.current = running
        unix_offset = time.time() - time.monotonic()

        def instruction(report: ResourceReport) -> Instruction:
            entry = by_device.get(report.device_id)
            if entry is None:
                return Instruction(round=number, local_iterations=self.config.local_iterations)
            return self._instruction(
                number,
                entry,
                collector.deadline_for(entry.device) + unix_offset,
                collector.carriers,
                iterations.get(report.device_id, self.config.local_iterations),
            )

        await self._answer(reports, instruction)
        log.info(
            "round %d dispatched: %s",
            number,
            " ".join(f"{e.block}:{e.device}" for e in sorted(allocation.assignment, key=_block)),
        )
        return running

    def holder_allowance(self, predicted_s: float) -> float:
        """Seconds a block holder has to deliver, from the latency its own report predicts: a
        silent holder costs the round this, not the whole round timeout."""
        allowance = self.config.holder_grace_s + self.config.holder_slack * predicted_s
        return min(allowance, self.config.round_timeout_s)

    def _instruction(
        self,
        number: int,
        entry: Assignment,
        deadline_unix: float,
        head_blocks: set[int],
        iterations: int | None = None,
    ) -> Instruction:
        return Instruction(
            round=number,
            block=entry.block,
            bandwidth_hz=entry.bandwidth_hz,
            local_iterations=iterations or self.config.local_iterations,
            deadline_unix_s=deadline_unix,
            modelled_latency_s=entry.latency_s,
            skip_head=entry.block not in head_blocks,
        )

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
        """Until no device holds a block: each uploaded, or failed (died, missed its deadline,
        was refused) and its block went to an idle device or could not be placed."""
        collector = running.collector
        while not self._stopping:
            now = time.monotonic()
            for device in list(collector.assignment):
                if not self.registry.is_live(device):
                    collector.fail(device, "died", "stopped responding")
                elif now > collector.deadline_for(device):
                    collector.fail(device, "late", "missed its deadline")
            self.redispatch(running)
            if collector.settled():
                if collector.orphans:
                    log.warning(
                        "round %d: no idle device fits blocks %s; closing the round without them",
                        running.number,
                        sorted(collector.orphans),
                    )
                return
            collector.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(collector.changed.wait(), timeout=0.5)

    def redispatch(self, running: RunningRound) -> None:
        """Hand every orphaned block to the fastest idle live device that fits it."""
        collector = running.collector
        for block in list(collector.orphans):
            device = self._idle_device_for(running, block)
            if device is None:
                continue
            failure = next(f for f in reversed(collector.failures) if f.block == block)
            pending = self._pending.pop(device)
            entry = running.entry_of(block)
            predicted = (
                pending.report.block_seconds[block - 1] * self.config.local_iterations
                + entry.upload_s
            )
            deadline = time.monotonic() + self.holder_allowance(predicted)
            collector.reassign(block, device, deadline)
            if collector.weights is not None:  # the new device trains the round's default M
                collector.weights[block] = float(self.config.local_iterations)
            running.reassignments.append(
                Reassignment(
                    block,
                    failure.device,
                    device,
                    failure.reason,
                    time.monotonic() - running.started,
                    failure.kind,
                )
            )
            log.warning(
                "round %d: block %d handed from %s (%s) to %s",
                running.number,
                block,
                failure.device,
                failure.reason,
                device,
            )
            self._settle(
                pending,
                self._instruction(
                    running.number,
                    dataclasses.replace(entry, device=device),
                    deadline + time.time() - time.monotonic(),
                    collector.carriers,  # the head's upload follows its block
                ),
            )

    def _idle_device_for(self, running: RunningRound, block: int) -> str | None:
        """A live device waiting for an instruction, holding nothing this round, that has not
        failed this block and has the memory for it; the fastest on this block."""
        collector = running.collector
        failed = collector.failed_devices(block)
        candidates = [
            (pending.report.block_seconds[block - 1], device)
            for device, pending in self._pending.items()
            if device not in collector.assignment
            and device not in failed
            and pending.report.available_memory_bytes >= self._need(pending, block)
            and self.registry.is_live(device)
        ]
        return min(candidates)[1] if candidates else None

    @staticmethod
    def _need(pending: PendingReport, block: int) -> float:
        """Memory `block` needs on the device of `pending`: what it measured itself."""
        return pending.report.block_memory_bytes[block - 1]

    async def apply(self, running: RunningRound) -> tuple[dict[int, Upload], bool]:
        """Close the round and apply what arrived with Adam; a step that would leave the model
        non-finite is undone (returns rolled_back=True) and the uploads behind it are named."""
        collector = running.collector
        uploads = collector.close()
        gradients = collector.aggregate()
        rolled_back = False
        if gradients:
            try:
                await asyncio.to_thread(self.trainer.apply, gradients)
            except NonFiniteStep as error:
                rolled_back = True
                log.error(
                    "round %d: %s; the step was undone. Uploads in it: %s",
                    running.number,
                    error,
                    ", ".join(f"{u.device_id} (block {b})" for b, u in sorted(uploads.items())),
                )
            else:
                collector.accepted_norms()
                for block in uploads:
                    self.last_trained[block] = running.number
        self.completed = running.number
        return uploads, rolled_back

    def record(
        self, running: RunningRound, uploads: dict[int, Upload], rolled_back: bool
    ) -> RoundRecord:
        allocation = running.allocation

        def measured(entry: Assignment) -> Upload | None:
            upload = uploads.get(entry.block)
            return upload if upload is not None and upload.device_id == entry.device else None

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
                    compute_s=upload.compute_s if (upload := measured(entry)) else None,
                    upload_s=upload.upload_s if upload else None,
                    grad_norm=running.collector.norms.get(entry.block) if upload else None,
                )
                for entry in allocation.assignment
            ],
            blocks_updated=[] if rolled_back else sorted(uploads),
            train_loss=float(np.mean([u.train_loss for u in uploads.values()]))
            if uploads
            else None,
            reassignments=list(running.reassignments),
            refusals=list(running.collector.failures),
            head_blocks=sorted(running.collector.carriers),
            clamped=list(running.clamped),
            rolled_back=rolled_back,
            allocator=allocation.source,
        )

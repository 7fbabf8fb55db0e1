"""The round engine on its own: a fake allocator, a numpy trainer and agents that are coroutines.
No model, no sockets: every phase of a round and every way a round can go wrong, in milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from lola_deft.server.allocator import AllocationFailed, InProcessAllocator
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.engine import RoundEngine, channel_efficiencies
from lola_deft.server.errors import InvalidRequest, NotAssigned, NotNow
from lola_deft.server.messages import (
    Allocation,
    AllocationRequest,
    Assignment,
    Evaluation,
    Instruction,
    Registration,
    ResourceReport,
    RunHistory,
    Upload,
    UploadHeader,
)
from lola_deft.server.registry import AgentRegistry

BLOCKS = 3


class NumpyTrainer:
    """Adapters as numpy arrays, plain SGD: what the engine needs of a model, nothing more."""

    independent_slots = False

    def __init__(self) -> None:
        self.blocks = BLOCKS
        self.block_bits = 1e6
        self.head_bits = 3e6
        self.block_names = {b: [f"b{b}"] for b in range(1, BLOCKS + 1)}
        self.head_names = ["head"]
        self.shapes = {f"b{b}": (4,) for b in range(1, BLOCKS + 1)} | {"head": (2,)}
        self.params = {name: np.zeros(shape, np.float32) for name, shape in self.shapes.items()}
        self.applied: list[dict[str, np.ndarray]] = []
        self.checkpoints: list[int] = []

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self.params.items()}

    def apply(self, gradients: dict[str, np.ndarray]) -> None:
        self.applied.append(gradients)
        for name, gradient in gradients.items():
            self.params[name] -= gradient

    def evaluate(self) -> Evaluation:
        return Evaluation("accuracy", float(-self.params["head"].sum()), 1.0, {"accuracy": 0.5})

    def checkpoint(self, completed: int, history: RunHistory) -> None:
        self.checkpoints.append(completed)


class DepthOrderAllocator:
    """Block l to the l-th reporting device, equal bandwidth; can be told to fail."""

    def __init__(self) -> None:
        self.failures = 0
        self.failure: Exception = AllocationFailed("scheduler at test: UNAVAILABLE")
        self.requests: list[AllocationRequest] = []

    def allocate(self, request: AllocationRequest) -> Allocation:
        self.requests.append(request)
        if self.failures:
            self.failures -= 1
            raise self.failure
        devices = sorted(d.id for d in request.devices)
        share = request.bandwidth_hz / request.blocks
        return Allocation(
            "depth-order",
            2.0,
            0.001,
            tuple(
                Assignment(block, device, share, 2.0, 1.0, 1.0)
                for block, device in enumerate(devices[: request.blocks], start=1)
            ),
        )

    def close(self) -> None:
        pass


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_engine(
    tmp_path: Path, rounds: int = 1, **overrides: object
) -> tuple[RoundEngine, NumpyTrainer, DepthOrderAllocator, Clock]:
    config = CoordinatorConfig(
        model_dir=tmp_path,
        data_dir=tmp_path,
        rounds=rounds,
        report_wait_s=0.05,
        round_timeout_s=30,
        eval_every=1,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    clock = Clock()
    trainer, allocator = NumpyTrainer(), DepthOrderAllocator()
    registry = AgentRegistry(liveness_timeout_s=10, clock=clock)
    return RoundEngine(config, trainer, registry, allocator), trainer, allocator, clock


def report(device_id: str, round_number: int = 1) -> ResourceReport:
    return ResourceReport(
        device_id, round_number, 8e9, 1.0, 10.0, 2.0, 0.0, (0.1, 0.2, 0.3), (1e6, 2e6, 3e6)
    )


def join(engine: RoundEngine, device_id: str) -> str:
    return engine.registry.register(Registration(device_id, "hw", "1", (), "fp")).session


def join_all(engine: RoundEngine, count: int) -> list[str]:
    devices = [f"dev{i}" for i in range(count)]
    for device in devices:
        join(engine, device)
    return devices


def upload_block(
    engine: RoundEngine, device_id: str, instruction: Instruction, value: float
) -> None:
    """Upload a gradient of `value` for the instruction's block."""
    header = UploadHeader("s", instruction.round, instruction.block, 0.5, 0.25)
    plan = engine.plan_upload(device_id, header)
    tensors = {n: np.full(s, value, np.float32) for n, s in plan.shapes.items()}
    engine.accept_upload(
        instruction.round, Upload(device_id, plan.block, tensors, 0.5, 0.1, 24, 0.25)
    )


async def honest_agent(engine: RoundEngine, device_id: str, value: float = 1.0) -> Instruction:
    """Report, and upload a gradient of `value` for the block it is given."""
    instruction = await engine.submit_report(report(device_id, engine.next_round))
    if instruction.block:
        upload_block(engine, device_id, instruction, value)
    return instruction


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_a_round_goes_through_every_phase(tmp_path: Path) -> None:
    engine, trainer, allocator, _ = make_engine(tmp_path)
    devices = [f"dev{i}" for i in range(4)]
    for device in devices:
        join(engine, device)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        instructions = await asyncio.gather(*(honest_agent(engine, d) for d in devices))
        await rounds
        assert sorted(i.block for i in instructions) == [0, 1, 2, 3]  # one device sits out
        assert (await engine.submit_report(report("dev0", 2))).finished

    run(main)
    assert engine.error is None and engine.completed == 1 and trainer.checkpoints == [1]
    (record,) = engine.history.rounds
    assert record.blocks_updated == [1, 2, 3] and record.reported_devices == 4
    assert set(record.coordinator_s) >= {"schedule", "dispatch", "apply", "evaluate", "checkpoint"}
    assert record.train_loss == pytest.approx(0.25) and record.eval is not None
    assert engine.history.baseline is not None
    assert np.all(trainer.params["b1"] == -1.0) and np.all(trainer.params["head"] == -1.0)
    assert len(allocator.requests[0].devices) == 4
    assert engine.unfinished_agents() == {"dev1", "dev2", "dev3"}


@pytest.mark.parametrize(
    "failure",
    [AllocationFailed("scheduler at test: UNAVAILABLE"), ValueError("f(a) and f(b) must differ")],
    ids=["outage", "solver-bug"],
)
def test_a_scheduler_outage_sits_the_round_out_and_training_goes_on(
    tmp_path: Path, failure: Exception
) -> None:
    engine, trainer, allocator, _ = make_engine(tmp_path)
    allocator.failures, allocator.failure = 1, failure
    devices = [f"dev{i}" for i in range(3)]
    for device in devices:
        join(engine, device)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        first = await asyncio.gather(*(honest_agent(engine, d) for d in devices))
        assert {i.block for i in first} == {0} and {i.round for i in first} == {1}
        second = await asyncio.gather(*(honest_agent(engine, d) for d in devices))
        assert sorted(i.block for i in second) == [1, 2, 3]
        await rounds

    run(main)
    assert engine.completed == 1 and len(trainer.applied) == 1


def test_a_dead_agent_does_not_hold_the_round(tmp_path: Path) -> None:
    engine, _, _, clock = make_engine(tmp_path)
    sessions = {device: join(engine, device) for device in ("dev0", "dev1", "dev2")}

    async def silent_agent() -> None:
        await engine.submit_report(report("dev2"))  # takes a block, then dies

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        await asyncio.gather(
            honest_agent(engine, "dev0"), honest_agent(engine, "dev1"), silent_agent()
        )
        clock.now += 100  # dev2 has been silent past its liveness; the others sent heartbeats
        engine.registry.touch(sessions["dev0"])
        engine.registry.touch(sessions["dev1"])
        await rounds

    run(main)
    (record,) = engine.history.rounds
    assert record.blocks_updated == [1, 2]
    assert [a.compute_s for a in record.assignment] == [0.5, 0.5, None]


def test_refusals_name_the_problem_and_store_nothing(tmp_path: Path) -> None:
    engine, _, _, _ = make_engine(tmp_path)
    for device in ("dev0", "dev1", "dev2", "idle"):
        join(engine, device)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        bad = ResourceReport("dev0", 1, float("nan"), 1, 10, 2, 0, (0.1, 0.2, 0.3), (1, 2, 3))
        with pytest.raises(InvalidRequest, match="available_memory_bytes"):
            await engine.submit_report(bad)
        reports = [engine.submit_report(report(d)) for d in ("dev0", "dev1", "dev2", "idle")]
        instructions = dict(
            zip(("dev0", "dev1", "dev2", "idle"), await asyncio.gather(*reports), strict=True)
        )
        assert instructions["idle"].block == 0
        with pytest.raises(NotAssigned, match="no block in round 1"):
            engine.weights_for("idle", 1)
        with pytest.raises(NotNow, match="round 2 is not running"):
            engine.weights_for("dev0", 2)
        with pytest.raises(NotAssigned, match="no block"):
            engine.plan_upload("idle", UploadHeader("s", 1, 1, 0, 0))
        assert engine.current is not None and engine.current.collector.uploads == {}
        engine.stop()
        await rounds

    run(main)


def test_a_cancelled_report_leaves_nothing_behind_and_polls_are_bounded(tmp_path: Path) -> None:
    engine, _, _, _ = make_engine(tmp_path, report_poll_s=0.05, min_agents=10)
    join(engine, "dev0")

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        again = await engine.submit_report(report("dev0"))
        assert again == Instruction(round=1)  # nothing yet: report again
        engine.config.report_poll_s = 5.0
        waiting = asyncio.create_task(engine.submit_report(report("dev0")))
        await asyncio.sleep(0.01)
        assert engine.waiting_reports() == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert engine.waiting_reports() == 0
        engine.stop()
        await rounds

    run(main)


def test_both_allocators_send_the_scheduler_the_same_instance(tmp_path: Path) -> None:
    from google.protobuf import json_format

    from lola_deft.server.allocator import InProcessAllocator, allocate_request

    engine, _, _, _ = make_engine(tmp_path)
    request = engine.build_request([report(f"dev{i}") for i in range(4)], 1)
    message = json_format.MessageToDict(allocate_request(request), preserving_proto_field_name=True)
    assert {k: v for k, v in message.items() if k not in ("policy", "seed")} == {
        **request.instance_doc(),
        "blocks": BLOCKS,
        "local_iterations": request.local_iterations,
    }
    allocation = InProcessAllocator().allocate(request)
    assert sorted(a.block for a in allocation.assignment) == [1, 2, 3]
    assert allocation.policy == "jbba" and allocation.latency_s > 0


@pytest.mark.parametrize("independent", [False, True])
def test_each_device_fits_a_block_by_its_own_measured_need(
    tmp_path: Path, independent: bool
) -> None:
    """A device fits a block in the request exactly when its memory covers its own need of
    that block, whatever the others measured (PAC+ cold and warm caches; LoRA blocks on
    different hardware)."""
    engine, trainer, _, _ = make_engine(tmp_path)
    trainer.independent_slots = independent  # type: ignore[misc]
    # (memory, need of blocks 1..3): roomy, small but frugal, too small for its deepest block.
    offers = {
        "roomy": (6e6, (3e6, 4e6, 5e6)),
        "frugal": (2e6, (1e6, 1e6, 2e6)),
        "short": (3e6, (1e6, 2e6, 5e6)),
    }
    reports = [
        dataclasses.replace(report(name), available_memory_bytes=memory, block_memory_bytes=need)
        for name, (memory, need) in offers.items()
    ]
    request = engine.build_request(reports, 1)
    fits = {
        device.id: device.memory_bytes >= max(request.block_memory_bytes)
        for device in request.devices
    }
    assert fits == {"roomy": True, "frugal": True, "short": False}
    for device, (memory, need) in zip(request.devices, offers.values(), strict=True):
        for block, block_need in enumerate(request.block_memory_bytes):
            assert (device.memory_bytes >= block_need) <= (memory >= need[block])


class SolvingAllocator(InProcessAllocator):
    """The real scheduler in process (memory and costs matter), keeping what it was asked."""

    def __init__(self) -> None:
        self.requests: list[AllocationRequest] = []

    def allocate(self, request: AllocationRequest) -> Allocation:
        self.requests.append(request)
        return super().allocate(request)


def jbba_engine(tmp_path: Path, rounds: int, **overrides: object) -> RoundEngine:
    engine, _, _, _ = make_engine(tmp_path, rounds=rounds, **overrides)
    engine.allocator = SolvingAllocator()
    return engine


async def reporting_agent(
    engine: RoundEngine, device_id: str, lie: Callable[[ResourceReport], ResourceReport]
) -> list[int]:
    """A looping agent whose every report is `lie(honest report)`; it trains what it gets."""
    uploaded = []
    while True:
        instruction = await engine.submit_report(lie(report(device_id, engine.next_round)))
        if instruction.finished:
            return uploaded
        if instruction.block:
            upload_block(engine, device_id, instruction, 1.0)
            uploaded.append(instruction.block)


@pytest.mark.parametrize(
    "lie",
    [
        lambda r: dataclasses.replace(r, block_memory_bytes=(1e12,) * BLOCKS),
        lambda r: dataclasses.replace(r, block_memory_bytes=(1.0,) * BLOCKS),
        lambda r: dataclasses.replace(r, available_memory_bytes=1e15),
        lambda r: dataclasses.replace(r, block_seconds=(3e5,) * BLOCKS),
    ],
    ids=["huge-need", "tiny-need", "huge-memory", "slowest"],
)
def test_one_lying_device_moves_only_itself(
    tmp_path: Path, lie: Callable[[ResourceReport], ResourceReport]
) -> None:
    """Rounds go on with every block trained every round, whatever one device claims."""
    engine = jbba_engine(tmp_path, rounds=3)
    honest = join_all(engine, 3)
    join(engine, "liar")

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        await asyncio.gather(
            *(looping_agent(engine, device) for device in honest),
            reporting_agent(engine, "liar", lie),
        )
        await rounds

    run(main)
    assert [record.blocks_updated for record in engine.history.rounds] == [[1, 2, 3]] * 3


def test_a_claim_far_faster_than_its_hardware_class_is_clamped(tmp_path: Path) -> None:
    engine = jbba_engine(tmp_path, rounds=2)
    honest = join_all(engine, 3)  # one hardware class ("hw"): its claims are evidence
    join(engine, "liar")

    def lie(honest_report: ResourceReport) -> ResourceReport:
        return dataclasses.replace(honest_report, block_seconds=(1e-6,) * BLOCKS)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        await asyncio.gather(
            *(looping_agent(engine, device) for device in honest),
            reporting_agent(engine, "liar", lie),
        )
        await rounds

    run(main)
    for record in engine.history.rounds:
        (clamp,) = {(c.device, c.claimed) for c in record.clamped}
        assert clamp == ("liar", 1e-6)
        assert all(c.used >= 0.1 / 10 for c in record.clamped)
    assert isinstance(engine.allocator, SolvingAllocator)
    offers = {device.id: device for device in engine.allocator.requests[-1].devices}
    assert min(offers["liar"].block_seconds) >= 0.1 / 10


async def looping_agent(engine: RoundEngine, device_id: str, value: float = 1.0) -> list[int]:
    """Report, train what it is given, report again, until training is over; returns the
    blocks it uploaded."""
    uploaded = []
    while True:
        instruction = await engine.submit_report(report(device_id, engine.next_round))
        if instruction.finished:
            return uploaded
        if instruction.block:
            upload_block(engine, device_id, instruction, value)
            uploaded.append(instruction.block)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_a_dead_agents_block_is_handed_to_an_idle_device_in_the_same_round(
    tmp_path: Path,
) -> None:
    engine, trainer, _, clock = make_engine(tmp_path)
    sessions = {device: join(engine, device) for device in ("dev0", "dev1", "dev2", "spare")}

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        spare = asyncio.create_task(looping_agent(engine, "spare"))
        holders = [honest_agent(engine, "dev0"), honest_agent(engine, "dev1")]
        await asyncio.gather(*holders, engine.submit_report(report("dev2")))  # dev2 then dies
        await until(lambda: engine.waiting_reports() == 1)  # the spare waits for work
        clock.now += 100  # dev2 silent past its liveness; the others sent heartbeats
        for device in ("dev0", "dev1", "spare"):
            engine.registry.touch(sessions[device])
        assert await spare == [3]
        await rounds

    run(main)
    (record,) = engine.history.rounds
    assert record.blocks_updated == [1, 2, 3]
    (moved,) = record.reassignments
    assert (moved.block, moved.from_device, moved.to_device) == (3, "dev2", "spare")
    assert moved.reason == "stopped responding" and moved.kind == "died"
    assert [(r.device, r.block, r.kind) for r in record.refusals] == [("dev2", 3, "died")]
    assert np.all(trainer.params["b3"] == -1.0)


def test_a_silent_block_holder_loses_its_block_after_its_own_expected_time(
    tmp_path: Path,
) -> None:
    """A device that takes a block and stays live but never uploads: its deadline follows from
    the latency its report predicts, not the 300 s round timeout (the test's 60 s bound)."""
    engine, _, _, _ = make_engine(tmp_path, round_timeout_s=300, holder_grace_s=0.2)
    engine.config.holder_slack = 0.0
    for device in ("dev0", "dev1", "dev2", "spare"):
        join(engine, device)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        spare = asyncio.create_task(looping_agent(engine, "spare"))
        silent = engine.submit_report(report("dev2"))  # takes block 3, says nothing more
        instructions = await asyncio.gather(
            honest_agent(engine, "dev0"), honest_agent(engine, "dev1"), silent
        )
        assert instructions[2].deadline_unix_s < time.time() + 300 / 2
        assert await spare == [3]
        await rounds

    run(main)
    (record,) = engine.history.rounds
    assert record.blocks_updated == [1, 2, 3]
    (moved,) = record.reassignments
    assert (moved.block, moved.from_device, moved.to_device, moved.kind) == (
        3,
        "dev2",
        "spare",
        "late",
    )


def test_a_refused_upload_frees_its_block_at_once(tmp_path: Path) -> None:
    # round_timeout 300 s and a 60 s test bound: only an immediate hand-over can pass.
    engine, trainer, _, _ = make_engine(tmp_path, round_timeout_s=300)
    for device in ("dev0", "dev1", "dev2", "spare"):
        join(engine, device)

    async def poisoner() -> None:
        instruction = await engine.submit_report(report("dev2"))
        header = UploadHeader("s", 1, instruction.block, 0.5, 0.25)
        plan = engine.plan_upload("dev2", header)
        tensors = {n: np.full(s, np.nan, np.float32) for n, s in plan.shapes.items()}
        with pytest.raises(InvalidRequest, match="non-finite"):
            engine.accept_upload(1, Upload("dev2", plan.block, tensors, 0.5, 0.1, 24, 0.25))

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        spare = asyncio.create_task(looping_agent(engine, "spare"))
        await asyncio.gather(honest_agent(engine, "dev0"), honest_agent(engine, "dev1"), poisoner())
        assert await spare == [3]
        await rounds

    run(main)
    (record,) = engine.history.rounds
    assert record.blocks_updated == [1, 2, 3]
    assert record.reassignments[0].reason.startswith("refused: tensor")
    assert record.reassignments[0].kind == "refused"
    assert all(np.all(np.isfinite(value)) for value in trainer.params.values())


def test_a_refused_upload_without_a_spare_closes_the_round_at_once(tmp_path: Path) -> None:
    engine, _, _, _ = make_engine(tmp_path, round_timeout_s=300, max_grad_norm=100.0)
    for device in ("dev0", "dev1", "dev2"):
        join(engine, device)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        await asyncio.gather(
            honest_agent(engine, "dev0"), honest_agent(engine, "dev1"), refused(engine, "dev2")
        )
        await rounds

    async def refused(engine: RoundEngine, device: str) -> None:
        with pytest.raises(InvalidRequest, match="exceeds --max-grad-norm 100"):
            await honest_agent(engine, device, value=3e38)  # finite, and far too large

    run(main)
    (record,) = engine.history.rounds
    assert record.blocks_updated == [1, 2] and record.reassignments == []


def test_with_fewer_agents_than_blocks_the_blocks_rotate(tmp_path: Path) -> None:
    engine, _, allocator, _ = make_engine(tmp_path, rounds=3, min_agents=2)
    for device in ("dev0", "dev1"):
        join(engine, device)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        await asyncio.gather(looping_agent(engine, "dev0"), looping_agent(engine, "dev1"))
        await rounds

    run(main)
    trained = [record.blocks_updated for record in engine.history.rounds]
    # Never-trained first, then the least recently trained (ties: lower block first).
    assert trained == [[1, 2], [1, 3], [1, 2]]
    assert [request.blocks for request in allocator.requests] == [2, 2, 2]
    # The scheduler saw each device's costs of the chosen blocks only.
    assert allocator.requests[1].devices[0].block_seconds == (0.1, 0.3)


def test_a_step_that_breaks_the_model_is_undone_and_recorded(tmp_path: Path) -> None:
    from lola_deft.server.errors import NonFiniteStep

    engine, trainer, _, _ = make_engine(tmp_path)
    for device in ("dev0", "dev1", "dev2"):
        join(engine, device)

    def poisoned(gradients: dict[str, np.ndarray]) -> None:
        raise NonFiniteStep(["head"])

    trainer.apply = poisoned  # type: ignore[method-assign]

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        await asyncio.gather(*(honest_agent(engine, d) for d in ("dev0", "dev1", "dev2")))
        await rounds

    run(main)
    (record,) = engine.history.rounds
    assert record.rolled_back and record.blocks_updated == []
    assert len(engine.guard.history) == 0  # the norms of a rolled-back step teach nothing
    assert trainer.checkpoints == [1]  # the (unchanged, finite) model is still checkpointed


def channel_report(device: str, efficiency: float = 0.0, uplink_bps: float = 0.0) -> ResourceReport:
    return ResourceReport(device, 1, 1e9, 0.0, 0.0, efficiency, uplink_bps, (1.0,) * 3, (1.0,) * 3)


def test_a_device_that_has_not_measured_its_channel_gets_a_prior() -> None:
    # Band 300 Hz over 3 blocks: an equal share is 100 Hz, so 200 bit/s is r = 2.
    share = {"bandwidth_hz": 300.0, "blocks": 3, "prior_uplink_bps": 50.0}
    fresh = channel_report("new")
    others = [channel_report("a", efficiency=4.0), channel_report("b", uplink_bps=200.0)]
    assert channel_efficiencies([*others, fresh], **share) == [4.0, 2.0, 3.0]  # the median
    assert channel_efficiencies([fresh], **share) == [0.5]  # nobody knows: 50 bit/s / 100 Hz


def test_one_device_a_round_carries_the_head_and_the_model_says_so(tmp_path: Path) -> None:
    engine, trainer, allocator, _ = make_engine(tmp_path, head_training="one")
    devices = join_all(engine, 3)
    refused: list[str] = []

    async def agent(device: str) -> Instruction:
        instruction = await engine.submit_report(report(device, 1))
        if instruction.skip_head:  # a device that sends the head anyway is refused
            header = UploadHeader("s", 1, instruction.block, 0.5, 0.25)
            plan = engine.plan_upload(device, header)
            assert "head" not in plan.shapes
            tensors = {n: np.ones(s, np.float32) for n, s in trainer.shapes.items()}
            wrong = {n: tensors[n] for n in [f"b{instruction.block}", "head"]}
            with pytest.raises(InvalidRequest, match="wrong set of tensors"):
                engine.accept_upload(1, Upload(device, instruction.block, wrong, 0.5, 0.1, 24, 0.3))
            refused.append(device)
            return instruction
        upload_block(engine, device, instruction, 2.0)
        return instruction

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        instructions = await asyncio.gather(*(agent(d) for d in devices))
        await rounds
        assert {i.block: i.skip_head for i in instructions} == {1: False, 2: True, 3: True}

    run(main)
    assert len(refused) == 2
    (record,) = engine.history.rounds
    assert record.head_blocks == [1] and record.blocks_updated == [1]
    assert np.all(trainer.params["head"] == -2.0)  # the carrier's head gradient alone
    assert allocator.requests[0].payload_bits == trainer.block_bits  # planned with S = block
    # The carrier's modelled upload is scaled to what it sends: (1 + 3) / 1 times 1 s.
    carrier = next(a for a in record.assignment if a.block == 1)
    assert (carrier.modelled_upload_s, carrier.modelled_latency_s) == (4.0, 5.0)
    assert record.modelled_latency_s == 5.0


def test_a_frozen_head_trains_only_in_its_warm_up_rounds(tmp_path: Path) -> None:
    engine, trainer, allocator, _ = make_engine(
        tmp_path, rounds=2, head_training="frozen", head_warmup_rounds=1
    )
    devices = join_all(engine, 3)

    async def main() -> None:
        rounds = asyncio.create_task(engine.run())
        first = await asyncio.gather(*(honest_agent(engine, d) for d in devices))
        second = await asyncio.gather(*(honest_agent(engine, d) for d in devices))
        await rounds
        assert not any(i.skip_head for i in first) and all(i.skip_head for i in second)

    run(main)
    assert [r.head_blocks for r in engine.history.rounds] == [[1, 2, 3], []]
    assert [r.payload_bits for r in allocator.requests] == [4e6, 1e6]
    assert len(trainer.applied) == 2 and "head" not in trainer.applied[1]
    assert "b1" in trainer.applied[1]

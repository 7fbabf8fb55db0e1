"""The round engine's PAC+ pipelines: a device the backbone does not fit gets one (planned by
the allocator), its devices leave the round's slots, and a stage's death aborts it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from lola_deft.server.allocator import AllocationFailed
from lola_deft.server.errors import InvalidRequest
from lola_deft.server.messages import PacReport
from lola_deft.server.pipeline_planning import BackboneCosts
from tests.server.test_engine import BLOCKS, join, make_engine, report

COSTS = BackboneCosts((0.01, 0.02, 0.02, 0.02), (4e6, 1e5, 1e5, 1e5), 8, 0.001, 4, 16)


class PlanningAllocator:
    """Answers PlanPipeline with the owner on units 0..1 and dev1 on 2..3 (or refuses)."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.documents: list[dict[str, Any]] = []

    def plan_pipeline(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.documents.append(doc)
        if self.refuse:
            raise AllocationFailed("scheduler: infeasible")
        return {
            "stages": [
                {"device": doc["owner"], "first_unit": 0, "last_unit": 1, "seconds": 0.1},
                {"device": "dev1", "first_unit": 2, "last_unit": 3, "seconds": 0.1},
            ]
        }


def pac(report_of: Any, needs: bool, samples: int = 10) -> Any:
    return dataclasses.replace(
        report_of, pac=PacReport(samples, 0 if needs else samples, 0.002, needs)
    )


def test_an_owner_and_its_helper_get_stages_and_the_rest_train_slots(tmp_path: Path) -> None:
    async def flow() -> None:
        engine, _, _, clock = make_engine(tmp_path)
        engine.pipeline_costs = lambda: COSTS
        planner = PlanningAllocator()
        engine.allocator.plan_pipeline = planner.plan_pipeline  # type: ignore[attr-defined]
        devices = [f"dev{i}" for i in range(4)]
        sessions = {device: join(engine, device) for device in devices}
        waiting = [
            asyncio.create_task(engine.submit_report(pac(report(d), needs=d == "dev3")))
            for d in devices
        ]
        await asyncio.sleep(0.05)
        reports = [engine._pending[d].report for d in devices]
        left = await engine.start_pipelines(reports, 1)
        assert {r.device_id for r in left} == {"dev0", "dev2"}  # the slots' devices
        [document] = planner.documents
        assert document["owner"] == "dev3" and len(document["devices"]) == 4
        assert document["devices"][0]["compute_factor"] == 2.0  # 0.002 s over the 0.001 s
        owner, helper = (await waiting[3]), (await waiting[1])
        assert owner.pipeline is not None and owner.pipeline.owner
        assert (owner.pipeline.first_unit, owner.pipeline.last_unit) == (0, 1)
        assert helper.pipeline is not None and not helper.pipeline.owner
        assert owner.pipeline.micro_batches == 3  # 10 uncached samples, 4 per micro-batch
        [job] = engine.pipelines.values()
        # A busy device is not planned again, and the owner is not the owner of a second one.
        assert await engine.start_pipelines(left, 2) == left
        # The helper dies: its pipeline is aborted, and then forgotten after its deadline.
        clock.now += 60
        engine.registry.touch(sessions["dev3"])  # the owner lives on; dev1 does not
        watcher = asyncio.create_task(engine._watch_pipelines())
        await asyncio.sleep(1.2)
        watcher.cancel()
        assert job.failure == "dev1 stopped responding"
        for task in waiting:
            task.cancel()

    asyncio.run(flow())


def test_no_plan_means_no_pipeline_and_every_report_stays(tmp_path: Path) -> None:
    async def flow() -> None:
        engine, _, _, _ = make_engine(tmp_path)
        engine.pipeline_costs = lambda: COSTS
        planner = PlanningAllocator(refuse=True)
        engine.allocator.plan_pipeline = planner.plan_pipeline  # type: ignore[attr-defined]
        reports = [pac(report(f"dev{i}"), needs=i == 0) for i in range(BLOCKS)]
        assert await engine.start_pipelines(reports, 1) == reports
        assert not engine.pipelines
        engine.pipeline_costs = None  # LoLa-DEFT: never
        assert await engine.start_pipelines(reports, 1) == reports

    asyncio.run(flow())


def test_a_pac_round_shares_its_mini_batches_by_speed(tmp_path: Path) -> None:
    """Slots of equal work: the scheduler's PlanShares gives the fast device more mini-batches,
    the instructions carry them, the record models them, and the mean weighs uploads by them."""

    async def flow() -> None:
        engine, trainer, allocator, _ = make_engine(tmp_path, local_iterations=2)
        trainer.independent_slots = True  # type: ignore[misc]
        documents: list[dict[str, Any]] = []

        def plan_shares(doc: dict[str, Any]) -> dict[str, Any]:
            documents.append(doc)
            counts = {"dev0": 16 * 4, "dev1": 16 * 1, "dev2": 16 * 1}  # 6 = 2 x 3 slots
            return {
                "shares": [{"device": d["id"], "samples": counts[d["id"]]} for d in doc["devices"]]
            }

        allocator.plan_shares = plan_shares  # type: ignore[attr-defined]
        devices = [f"dev{i}" for i in range(BLOCKS)]
        for device in devices:
            join(engine, device)
        reports = [report(device) for device in devices]
        request = engine.build_request(reports, 1)
        allocation = allocator.allocate(request)
        shared, iterations = await engine.share_work(request, allocation, 1)
        assert iterations == {"dev0": 4, "dev1": 1, "dev2": 1}
        [document] = documents
        assert document["total_samples"] == 2 * 16 * BLOCKS
        by_device = {entry.device: entry for entry in shared.assignment}
        assert by_device["dev0"].compute_s == 4 * 0.1  # 4 mini-batches at 0.1 s
        assert shared.latency_s == max(entry.latency_s for entry in shared.assignment)
        waiting = [asyncio.create_task(engine.submit_report(r)) for r in reports]
        await asyncio.sleep(0.05)
        running = await engine.dispatch(1, reports, request, shared, iterations)
        given = {
            device: (await task).local_iterations
            for device, task in zip(devices, waiting, strict=True)
        }
        assert given == iterations
        assert running.collector.weights == {
            entry.block: float(iterations[entry.device]) for entry in shared.assignment
        }

    asyncio.run(flow())


@pytest.mark.parametrize(
    ("state", "field"),
    [
        (PacReport(10**9, 0, 0.01, True), "pac.samples"),  # a pipeline of 60M micro-batches
        (PacReport(10, 11, 0.01, False), "pac.cached_samples"),
        (PacReport(10, 0, float("nan"), True), "pac.step_seconds"),
    ],
)
def test_an_absurd_pac_report_is_refused(tmp_path: Path, state: PacReport, field: str) -> None:
    engine, _, _, _ = make_engine(tmp_path)
    join(engine, "dev0")

    async def flow() -> None:
        with pytest.raises(InvalidRequest, match=field.replace(".", r"\.")):
            await engine.submit_report(dataclasses.replace(report("dev0"), pac=state))
        assert engine.waiting_reports() == 0

    asyncio.run(flow())

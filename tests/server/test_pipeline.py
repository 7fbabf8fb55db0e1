"""The coordinator's pipeline relay: states flow owner -> helpers -> owner, checked before they
are kept, bounded by the window, and a failure or a deadline stops the pipeline."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lola_deft.server.errors import (
    DeadlinePassed,
    GradientRefused,
    NotAssigned,
    NotNow,
    NotReady,
    PipelineAborted,
)
from lola_deft.server.pipeline import PipelineJob, StagePlan

B, T, H = 2, 3, 4


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def job(micro_batches: int = 3, window: int = 2, clock: Clock | None = None) -> PipelineJob:
    """Owner runs units 0..1, helper a units 2..3, helper b unit 4."""
    stages = (StagePlan("owner", 0, 1), StagePlan("a", 2, 3), StagePlan("b", 4, 4))
    return PipelineJob(
        "j1", stages, micro_batches, B, T, H, deadline=100.0, window=window,
        clock=clock or Clock(),
    )  # fmt: skip


def owner_upload(value: float = 1.0) -> dict[str, np.ndarray]:
    mask = np.ones((B, T), np.float32)
    mask[1, 2] = 0
    return {"hidden": np.full((B, T, H), value, np.float32), "mask": mask}


def states(units: int, value: float) -> dict[str, np.ndarray]:
    return {"states": np.full((B, units, T, H), value, np.float32)}


def test_states_flow_through_every_stage_and_back_to_the_owner() -> None:
    async def flow() -> None:
        relay = job()
        for m in range(3):
            relay.accept("owner", m, owner_upload(m))
            given = await relay.download("a", m, wait_s=1)
            assert given["hidden"][0, 0, 0] == m and given["mask"][1, 2] == 0
            relay.accept("a", m, states(2, 10 + m))
            given = await relay.download("b", m, wait_s=1)
            assert given["hidden"][0, 0, 0] == 10 + m  # a's last unit goes on
            relay.accept("b", m, states(1, 20 + m))
            back = (await relay.download("owner", m, wait_s=1))["states"]
            assert back.shape == (B, 3, T, H)  # units 2, 3 (a) and 4 (b), in order
            assert back[0, :, 0, 0].tolist() == [10 + m, 10 + m, 20 + m]
        assert relay.finished() and relay.held_bytes() == 0

    asyncio.run(flow())


def test_a_download_waits_for_its_input_and_a_repeat_gets_the_same() -> None:
    async def flow() -> None:
        relay = job()
        waiting = asyncio.create_task(relay.download("a", 0, wait_s=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        relay.accept("owner", 0, owner_upload(7))
        first = await waiting
        again = await relay.download("a", 0, wait_s=1)  # its answer was lost: ask again
        assert np.array_equal(first["hidden"], again["hidden"])
        relay.accept("a", 0, states(2, 1))
        with pytest.raises(NotNow, match="already downloaded"):
            await relay.download("a", 0, wait_s=1)
        with pytest.raises(NotReady, match="not ready yet"):
            await relay.download("b", 1, wait_s=0.05)

    asyncio.run(flow())


@pytest.mark.parametrize(
    ("tensors", "problem"),
    [
        ({"hidden": np.zeros((B, T, H), np.float32)}, "expected tensors"),
        ({**owner_upload(), "extra": np.zeros(1, np.float32)}, "expected tensors"),
        ({**owner_upload(), "hidden": np.zeros((B, T + 1, H), np.float32)}, "shape"),
        ({**owner_upload(), "hidden": np.full((B, T, H), np.nan, np.float32)}, "finite"),
        ({**owner_upload(), "hidden": np.full((B, T, H), 1e9, np.float32)}, "within"),
        ({**owner_upload(), "mask": np.full((B, T), 0.5, np.float32)}, "only 0 and 1"),
    ],
)
def test_a_bad_upload_is_refused_and_changes_nothing(
    tensors: dict[str, np.ndarray], problem: str
) -> None:
    relay = job()
    with pytest.raises(GradientRefused, match=problem):
        relay.accept("owner", 0, tensors)
    assert relay.held_bytes() == 0
    relay.accept("owner", 0, owner_upload())  # the honest upload still goes through


def test_who_may_send_what_and_when() -> None:
    relay = job(window=2)
    with pytest.raises(NotAssigned):
        relay.upload_shapes("stranger", 0)
    with pytest.raises(NotNow, match="not downloaded its input"):
        relay.upload_shapes("a", 0)  # a helper cannot push states nobody asked for
    with pytest.raises(NotNow, match=r"0\.\.2"):
        relay.upload_shapes("owner", 3)
    relay.accept("owner", 0, owner_upload())
    relay.accept("owner", 1, owner_upload())
    with pytest.raises(NotReady, match="ahead of the pipeline"):
        relay.upload_shapes("owner", 2)  # the window: two in flight, none collected
    with pytest.raises(NotNow, match="already received"):
        relay.accept("owner", 0, owner_upload())


def test_a_failure_or_the_deadline_stops_the_pipeline() -> None:
    async def flow() -> None:
        clock = Clock()
        relay = job(clock=clock)
        relay.accept("owner", 0, owner_upload())
        waiting = asyncio.create_task(relay.download("owner", 0, wait_s=5))
        await asyncio.sleep(0.05)
        relay.fail("helper a stopped responding")
        with pytest.raises(PipelineAborted, match="helper a stopped responding"):
            await waiting
        assert relay.held_bytes() == 0
        late = job(clock=clock)
        clock.now = 101.0
        with pytest.raises(DeadlinePassed):
            late.upload_shapes("owner", 0)
        with pytest.raises(PipelineAborted):
            await late.download("a", 0, wait_s=1)

    asyncio.run(flow())

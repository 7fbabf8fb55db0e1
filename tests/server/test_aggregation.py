"""RoundCollector: header checks, tensor checks, deadline, duplicates and head averaging."""

from __future__ import annotations

import numpy as np
import pytest

from lola_deft.server.aggregation import RoundCollector
from lola_deft.server.errors import DeadlinePassed, InvalidRequest, NotAssigned, NotNow
from lola_deft.server.messages import Upload, UploadHeader

SHAPES = {"b1": (2,), "b2": (3,), "head": (2, 2)}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def collector(clock: Clock | None = None) -> RoundCollector:
    return RoundCollector(
        4, {"a": 1, "b": 2}, SHAPES, {1: ["b1"], 2: ["b2"]}, ["head"], 160.0, clock or Clock()
    )


def header(block: int, round_number: int = 4) -> UploadHeader:
    return UploadHeader("s", round_number, block, 1.0, 0.5)


def upload(device: str, block: int, value: float) -> Upload:
    name = f"b{block}"
    tensors = {
        name: np.full(SHAPES[name], value, np.float32),
        "head": np.full(SHAPES["head"], value, np.float32),
    }
    return Upload(device, block, tensors, 1.0, 0.1, 24, 0.5)


def test_the_header_decides_before_any_tensor_is_read() -> None:
    rounds = collector()
    plan = rounds.plan("a", header(1))
    assert plan.shapes == {"b1": (2,), "head": (2, 2)} and plan.max_bytes == 24
    with pytest.raises(NotNow, match="already in progress"):
        rounds.plan("a", header(1))  # one stream per device at a time
    rounds.abandon("a")
    assert rounds.plan("a", header(1)).block == 1
    with pytest.raises(NotAssigned, match="assigned block 2, uploaded block 1"):
        rounds.plan("b", header(1))
    with pytest.raises(NotAssigned, match="no block"):
        rounds.plan("stranger", header(1))
    with pytest.raises(NotNow, match="upload is for round 3"):
        rounds.plan("b", header(2, round_number=3))


def test_uploads_after_the_deadline_are_refused_and_not_stored() -> None:
    clock = Clock()
    late = collector(clock)
    late.plan("a", header(1))
    clock.now = 161.0
    with pytest.raises(DeadlinePassed, match="deadline has passed"):
        late.accept(upload("a", 1, 1.0))
    with pytest.raises(DeadlinePassed):
        late.plan("b", header(2))
    assert late.uploads == {} and late.aggregate() == {}


def test_bad_tensors_are_refused() -> None:
    rounds = collector()
    bad = upload("a", 1, np.nan)
    with pytest.raises(InvalidRequest, match="non-finite"):
        rounds.accept(bad)
    assert rounds.uploads == {}


def test_head_gradients_are_averaged_and_retries_count_once() -> None:
    rounds = collector()
    assert not rounds.accept(upload("a", 1, 1.0)).duplicate
    retry = rounds.plan("a", header(1))
    assert retry.duplicate and retry.received_bytes == 24
    assert not rounds.complete.is_set()
    rounds.accept(upload("b", 2, 3.0))
    assert rounds.complete.is_set()
    gradients = rounds.aggregate()
    assert gradients["b1"].tolist() == [1.0, 1.0]
    assert gradients["b2"].tolist() == [3.0, 3.0, 3.0]
    assert np.all(gradients["head"] == 2.0)
    with pytest.raises(NotNow, match="already closed"):
        rounds.plan("c", header(1))


def test_the_head_mean_of_huge_finite_gradients_does_not_overflow() -> None:
    rounds = collector()
    rounds.accept(upload("a", 1, 3e38))
    rounds.accept(upload("b", 2, 3e38))
    head = rounds.aggregate()["head"]
    assert np.all(np.isfinite(head)) and head.dtype == np.float32

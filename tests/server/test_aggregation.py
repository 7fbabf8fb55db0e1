"""RoundCollector: header checks, tensor and norm checks, deadlines, duplicates, failures and
reassignment, and how the head's gradients are combined."""

from __future__ import annotations

import numpy as np
import pytest

from lola_deft.server.aggregation import RoundCollector, combine
from lola_deft.server.errors import (
    DeadlinePassed,
    GradientRefused,
    InvalidRequest,
    NotAssigned,
    NotNow,
)
from lola_deft.server.gradient_guard import GradientGuard
from lola_deft.server.messages import Upload, UploadHeader

SHAPES = {"b1": (2,), "b2": (3,), "head": (2, 2)}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def collector(clock: Clock | None = None, guard: GradientGuard | None = None) -> RoundCollector:
    return RoundCollector(
        4,
        {"a": 1, "b": 2},
        SHAPES,
        {1: ["b1"], 2: ["b2"]},
        ["head"],
        160.0,
        guard=guard or GradientGuard(),
        clock=clock or Clock(),
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
    rounds.abandon("a", "broken", "its upload stream broke")  # a stream that ends unaccepted...
    with pytest.raises(NotAssigned, match="holds no block"):
        rounds.plan("a", header(1))  # ...ends the hold: the block is another device's to take
    assert rounds.orphans == [1]
    with pytest.raises(NotAssigned, match="holds block 2, uploaded block 1"):
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


@pytest.mark.parametrize("value", [np.nan, np.inf, 3e38])
def test_non_finite_and_huge_gradients_are_refused_and_orphan_the_block(value: float) -> None:
    rounds = collector(guard=GradientGuard(max_norm=1e6))
    with pytest.raises(GradientRefused, match=r"non-finite|exceeds --max-grad-norm"):
        rounds.accept(upload("a", 1, value))
    assert rounds.uploads == {} and rounds.orphans == [1]
    assert rounds.failures[0].device == "a" and rounds.failures[0].reason.startswith("refused")
    with pytest.raises(NotAssigned):  # the device no longer holds the block
        rounds.accept(upload("a", 1, 1.0))


def test_the_relative_bound_learns_from_accepted_uploads() -> None:
    guard = GradientGuard(factor=10.0)
    rounds = collector(guard=guard)
    rounds.accept(upload("a", 1, 100.0))  # no history yet: only finiteness counts
    for norm in (1.0, 2.0, 1.0, 3.0, 1.0):
        guard.accepted(norm)  # median 1.0
    with pytest.raises(GradientRefused, match=r"gradient: norm 13\.2 exceeds 10x the median"):
        rounds.accept(upload("b", 2, 5.0))  # |[5, 5, 5] + [5, 5, 5, 5]| = 13.2 > 10 x 1.0
    assert list(rounds.uploads) == [1]
    rounds.accepted_norms()
    assert guard.history[-1] == pytest.approx(np.sqrt(6) * 100.0)


@pytest.mark.parametrize(
    ("loss", "compute"), [(float("nan"), 1.0), (-1.0, 1.0), (1e9, 1.0), (0.5, float("inf"))]
)
def test_absurd_reported_loss_or_compute_time_is_refused(loss: float, compute: float) -> None:
    rounds = collector()
    bad = upload("a", 1, 1.0)
    bad.train_loss, bad.compute_s = loss, compute
    with pytest.raises(GradientRefused, match=r"train_loss|compute_s"):
        rounds.accept(bad)


def test_a_failed_block_is_reassigned_with_its_own_deadline() -> None:
    clock = Clock()
    rounds = collector(clock)
    assert rounds.fail("a", "died", "stopped responding") == 1 and rounds.orphans == [1]
    assert not rounds.settled()  # b still holds block 2
    rounds.reassign(1, "c", deadline=500.0)
    clock.now = 300.0  # past the first deadline, within c's own
    assert rounds.plan("c", header(1)).deadline == 500.0
    rounds.accept(upload("c", 1, 1.0))
    with pytest.raises(DeadlinePassed):
        rounds.plan("b", header(2))
    rounds.fail("b", "late", "missed its deadline")
    assert rounds.settled() and rounds.orphans == [2] and sorted(rounds.uploads) == [1]
    assert rounds.failed_devices(1) == {"a"}


def test_bad_tensor_sets_are_refused() -> None:
    rounds = collector()
    wrong = upload("a", 1, 1.0)
    wrong.tensors["extra"] = np.zeros(1, np.float32)
    with pytest.raises(InvalidRequest, match="wrong set of tensors"):
        rounds.accept(wrong)
    assert rounds.uploads == {}
    rounds.abandon(
        "a", "refused", "refused: wrong set of tensors"
    )  # what the stream reader does next
    assert rounds.orphans == [1]


def test_head_gradients_are_averaged_and_retries_count_once() -> None:
    rounds = collector()
    assert not rounds.accept(upload("a", 1, 1.0)).duplicate
    retry = rounds.plan("a", header(1))
    assert retry.duplicate and retry.received_bytes == 24
    assert not rounds.settled()
    rounds.accept(upload("b", 2, 3.0))
    assert rounds.settled()
    gradients = rounds.aggregate()
    assert gradients["b1"].tolist() == [1.0, 1.0]
    assert gradients["b2"].tolist() == [3.0, 3.0, 3.0]
    assert np.all(gradients["head"] == 2.0)
    with pytest.raises(NotNow, match="already closed"):
        rounds.plan("c", header(1))


def test_the_head_mean_of_huge_finite_gradients_does_not_overflow() -> None:
    rounds = collector(guard=GradientGuard(max_norm=None, factor=None))
    rounds.accept(upload("a", 1, 3e38))
    rounds.accept(upload("b", 2, 3e38))
    head = rounds.aggregate()["head"]
    assert np.all(np.isfinite(head)) and head.dtype == np.float32


def test_robust_head_combiners_ignore_one_outlier() -> None:
    stacked = np.array([[1.0], [2.0], [3.0], [1e30]])
    assert combine(stacked, "mean")[0] > 1e29
    assert combine(stacked, "median")[0] == 2.5
    assert combine(stacked, "trimmed-mean")[0] == 2.5  # drops 1.0 and 1e30
    with pytest.raises(ValueError, match="unknown head combiner"):
        combine(stacked, "max")


def test_weights_make_the_mean_count_each_upload_by_its_work() -> None:
    """PAC+: a device that trained four mini-batches counts four times one that trained one."""
    import numpy as np

    from lola_deft.server.aggregation import RoundCollector
    from lola_deft.server.messages import Upload

    collector = RoundCollector(
        1, {"a": 1, "b": 2}, {"w": (2,)}, {1: [], 2: []}, ["w"], deadline=1e18,
        weights={1: 4.0, 2: 1.0},
    )  # fmt: skip
    for device, block, value in (("a", 1, 1.0), ("b", 2, 6.0)):
        tensors = {"w": np.full(2, value, np.float32)}
        collector.uploads[block] = Upload(device, block, tensors, 0.1, 0.1, 8, 0.5)
    assert collector.aggregate()["w"].tolist() == [2.0, 2.0]  # (4 x 1 + 1 x 6) / 5

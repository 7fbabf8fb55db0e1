"""RoundCollector: the deadline, duplicates and head averaging, without gRPC."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from lola_deft.protos.tensor_stream import TensorBundle
from lola_deft.server.aggregation import RoundCollector, UploadRejected

SHAPES = {"b1": (2,), "b2": (3,), "head": (2, 2)}


def collector(deadline_in: float = 60.0) -> RoundCollector:
    return RoundCollector(
        4,
        {"a": 1, "b": 2},
        SHAPES,
        {1: ["b1"], 2: ["b2"]},
        ["head"],
        time.monotonic() + deadline_in,
    )


def bundle(block: int, value: float, round_number: int = 4) -> TensorBundle:
    name = f"b{block}"
    return TensorBundle(
        "s",
        round_number,
        block,
        1.0,
        0.5,
        {
            name: np.full(SHAPES[name], value, np.float32),
            "head": np.full(SHAPES["head"], value, np.float32),
        },
    )


def test_uploads_after_the_deadline_are_refused_and_not_stored() -> None:
    late = collector(deadline_in=-0.1)
    with pytest.raises(UploadRejected) as caught:
        late.accept("a", bundle(1, 1.0), 0.1)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline has passed" in str(caught.value)
    assert late.uploads == {} and late.aggregate() == {}


def test_head_gradients_are_averaged_and_retries_count_once() -> None:
    rounds = collector()
    assert rounds.accept("a", bundle(1, 1.0), 0.1) == (False, bundle(1, 1.0).num_bytes)
    assert rounds.accept("a", bundle(1, 9.0), 0.1)[0] is True  # retry: ignored
    assert not rounds.wait(0.01)
    rounds.accept("b", bundle(2, 3.0), 0.1)
    assert rounds.wait(0.01)
    gradients = rounds.aggregate()
    assert gradients["b1"].tolist() == [1.0, 1.0]
    assert gradients["b2"].tolist() == [3.0, 3.0, 3.0]
    assert np.all(gradients["head"] == 2.0)
    with pytest.raises(UploadRejected, match="already closed"):
        rounds.accept("c", bundle(1, 1.0), 0.1)

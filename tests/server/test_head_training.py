"""Who carries the head each round, and the payload S that follows (server/head_training.py)."""

from __future__ import annotations

import pytest

from lola_deft.server.head_training import HeadPolicy
from lola_deft.server.messages import Allocation, Assignment


def allocation() -> Allocation:
    entries = (Assignment(2, "a", 10.0, 3.0, 2.0, 1.0), Assignment(3, "b", 10.0, 5.0, 4.0, 1.0))
    return Allocation("jbba", 5.0, 0.01, entries)


def test_carriers_and_payload_per_mode() -> None:
    blocks = [3, 2, 5]
    assert HeadPolicy("every").carriers(9, blocks) == {2, 3, 5}
    assert HeadPolicy("one").carriers(9, blocks) == {2}
    frozen = HeadPolicy("frozen", warmup_rounds=2)
    assert [frozen.carriers(n, blocks) for n in (1, 2, 3)] == [{2, 3, 5}, {2, 3, 5}, set()]
    assert [frozen.payload_bits(n, 10.0, 90.0) for n in (2, 3)] == [100.0, 10.0]
    assert HeadPolicy("one").payload_bits(1, 10.0, 90.0) == 10.0
    with pytest.raises(ValueError, match="unknown head training 'some'"):
        HeadPolicy("some")


def test_only_one_carrier_has_its_upload_scaled() -> None:
    # Block 2's device carries the head: its 1 s upload becomes (10 + 30) / 10 = 4 s.
    adjusted = HeadPolicy("one").adjust(allocation(), 1, 10.0, 30.0)
    assert [(e.upload_s, e.latency_s) for e in adjusted.assignment] == [(4.0, 6.0), (1.0, 5.0)]
    assert adjusted.latency_s == 6.0
    assert HeadPolicy("every").adjust(allocation(), 1, 10.0, 30.0) == allocation()

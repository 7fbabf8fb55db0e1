"""The modelled-against-measured compute error the demo and `make bench` report."""

from __future__ import annotations

import pytest

from lola_deft.server.compute_model import compute_errors, relative_errors, settled_error
from lola_deft.server.messages import AssignmentRecord, RoundRecord


def record(number: int, pairs: list[tuple[float, float | None]]) -> RoundRecord:
    assignment = [
        AssignmentRecord(b, f"d{b}", 1.0, 1.0, modelled, 0.0, compute_s=measured)
        for b, (modelled, measured) in enumerate(pairs, start=1)
    ]
    return RoundRecord(number, "jbba", 1.0, 1.0, 0.0, len(pairs), assignment, [], None)


def test_errors_are_relative_to_the_measured_compute_and_skip_missing_uploads() -> None:
    first = record(1, [(3.0, 1.0), (1.0, 2.0), (5.0, None)])
    assert relative_errors(first) == [2.0, 0.5]
    later = [record(n, [(1.1, 1.0), (0.9, 1.0), (1.0, 1.0)]) for n in range(2, 8)]
    errors = compute_errors([first, record(99, [(1.0, None)]), *later])
    assert [(e.round, e.devices) for e in errors][:2] == [(1, 2), (2, 3)]
    assert errors[0].median == pytest.approx(1.25)
    assert settled_error([first, *later], after=5) == pytest.approx(0.1)  # rounds 6 and 7
    assert settled_error([first], after=5) is None

"""The fallback allocator: a scheduler outage costs one fail-fast call, not the round."""

from __future__ import annotations

import pytest

from lola_deft.server.allocator import (
    AllocationFailed,
    FallbackAllocator,
    InProcessAllocator,
    SchedulerUnavailable,
)
from lola_deft.server.messages import Allocation, AllocationRequest, DeviceOffer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyService:
    """Stands in for GrpcAllocator: down, answering, or refusing, as the test says."""

    def __init__(self) -> None:
        self.state = "up"
        self.calls: list[bool] = []  # wait_for_ready of each call

    def allocate(self, request: AllocationRequest, *, wait_for_ready: bool = True) -> Allocation:
        self.calls.append(wait_for_ready)
        if self.state == "down":
            raise SchedulerUnavailable("scheduler at test: UNAVAILABLE: connection refused")
        if self.state == "refusing":
            raise AllocationFailed("scheduler at test: FAILED_PRECONDITION: infeasible")
        return InProcessAllocator().allocate(request)

    def close(self) -> None:
        pass


def request() -> AllocationRequest:
    devices = tuple(DeviceOffer(f"d{i}", 8e9, 2.0, (0.1, 0.2)) for i in range(3))
    return AllocationRequest("ba", 2, (1e6, 1e6), 2, 1e6, 1e8, devices, 0)


def test_an_outage_falls_back_in_process_and_the_service_is_used_again_when_back() -> None:
    clock, service = Clock(), FlakyService()
    allocator = FallbackAllocator(service, InProcessAllocator(), 30.0, clock)  # type: ignore[arg-type]
    assert allocator.allocate(request()).source == "service"
    service.state = "down"
    solved = allocator.allocate(request())
    assert solved.source == "fallback" and solved.policy == "ba" and not allocator.available
    assert sorted(a.block for a in solved.assignment) == [1, 2]
    calls = len(service.calls)
    clock.now = 10.0
    assert allocator.allocate(request()).source == "fallback"
    assert len(service.calls) == calls  # not asked again before retry_after_s
    service.state = "up"
    clock.now = 31.0
    assert allocator.allocate(request()).source == "service" and allocator.available
    assert service.calls[-1] is False  # the probe does not wait for a service that is down
    assert allocator.fallback_rounds == 2


def test_a_refusal_is_an_answer_not_an_outage() -> None:
    service = FlakyService()
    service.state = "refusing"
    allocator = FallbackAllocator(service, InProcessAllocator(), 30.0, Clock())  # type: ignore[arg-type]
    try:
        allocator.allocate(request())
    except AllocationFailed as error:
        assert not isinstance(error, SchedulerUnavailable)
    else:
        raise AssertionError("an infeasible round must not be solved by the fallback")
    assert allocator.available and allocator.fallback_rounds == 0


def test_a_solver_bug_in_process_costs_the_round_not_the_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lola_deft.scheduler.policies as policies

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("f(a) and f(b) must have different signs")

    monkeypatch.setattr(policies, "solve", broken)
    with pytest.raises(AllocationFailed, match="scheduler failed: ValueError: f\\(a\\)"):
        InProcessAllocator().allocate(request())

"""How the round engine reaches a scheduler: a small interface with two implementations, the
scheduler microservice over gRPC and the scheduler package in process, and a third that puts
them together for outages. All speak the scheduler's instance JSON, so they answer the same
request the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from lola_deft.server.messages import Allocation, AllocationRequest

if TYPE_CHECKING:
    import grpc

    from lola_deft.protos.credentials import TlsFiles
    from lola_deft.protos.deft.v1 import scheduler_pb2


log = logging.getLogger("deft.coordinator")


class AllocationFailed(Exception):
    """No allocation this round (scheduler unreachable, request refused, infeasible)."""


class SchedulerUnavailable(AllocationFailed):
    """The service did not answer (down, unreachable, overloaded, timed out): a fallback may
    solve the round instead. A refusal (bad request, infeasible) is an answer, not this."""


class Allocator(Protocol):
    def allocate(self, request: AllocationRequest) -> Allocation:
        """Raises AllocationFailed saying why."""
        ...

    def plan_pipeline(self, doc: dict[str, Any]) -> dict[str, Any]:
        """PAC+'s pipeline plan for the scheduler's pipeline document (its JSON answer:
        stages, bottleneck_s, solve_seconds); raises AllocationFailed saying why."""
        ...

    def plan_shares(self, doc: dict[str, Any]) -> dict[str, Any]:
        """PAC+'s samples per device for a round (JSON: shares, makespan_s, solve_seconds)."""
        ...

    def close(self) -> None: ...


T = TypeVar("T")


def _answer_of(solve_it: Callable[[], T]) -> T:
    """The solver's answer, or AllocationFailed: a refusal says why; anything else is a solver
    bug, logged with its traceback, and must cost one round, never the coordinator."""
    from lola_deft.scheduler.errors import SchedulerError

    try:
        return solve_it()
    except SchedulerError as error:
        raise AllocationFailed(f"scheduler: {error}") from error
    except Exception as error:
        log.exception("in-process scheduler failed")
        raise AllocationFailed(f"scheduler failed: {type(error).__name__}: {error}") from error


class InProcessAllocator:
    """The scheduler package called directly: no service to run (tests, small setups)."""

    def allocate(self, request: AllocationRequest) -> Allocation:
        from lola_deft.scheduler.instance import parse_instance
        from lola_deft.scheduler.policies import solve

        def solved() -> Allocation:
            instance = parse_instance(request.instance_doc())
            allocation = solve(instance, request.policy, seed=request.seed)
            return Allocation.from_json(allocation.to_json())

        return _answer_of(solved)

    def plan_pipeline(self, doc: dict[str, Any]) -> dict[str, Any]:
        from lola_deft.scheduler.pac_convert import response_json, solve_pipeline

        return _answer_of(lambda: response_json(solve_pipeline(doc)))

    def plan_shares(self, doc: dict[str, Any]) -> dict[str, Any]:
        from lola_deft.scheduler.pac_convert import response_json, solve_shares

        return _answer_of(lambda: response_json(solve_shares(doc)))

    def close(self) -> None:
        pass


class GrpcAllocator:
    """The scheduler microservice (deft.v1.Scheduler/Allocate). gRPC is imported here, not at
    the top: the engine imports this module for the interface and must stay free of gRPC."""

    def __init__(self, address: str, timeout_s: float, tls: TlsFiles | None = None) -> None:
        from lola_deft.protos.credentials import PLAINTEXT
        from lola_deft.scheduler.client import SchedulerClient

        self.client = SchedulerClient(address, timeout_s=timeout_s, tls=tls or PLAINTEXT)

    def allocate(self, request: AllocationRequest, *, wait_for_ready: bool = True) -> Allocation:
        import grpc

        from lola_deft.scheduler.convert import response_to_json

        try:
            response = self.client.allocate(
                allocate_request(request), wait_for_ready=wait_for_ready
            )
        except grpc.RpcError as error:
            raise self._failure(error) from error
        return Allocation.from_json(response_to_json(response))

    def plan_pipeline(self, doc: dict[str, Any], *, wait_for_ready: bool = True) -> dict[str, Any]:
        from lola_deft.protos.deft.v1 import scheduler_pb2

        return self._plan(doc, scheduler_pb2.PlanPipelineRequest(), wait_for_ready)

    def plan_shares(self, doc: dict[str, Any], *, wait_for_ready: bool = True) -> dict[str, Any]:
        from lola_deft.protos.deft.v1 import scheduler_pb2

        return self._plan(doc, scheduler_pb2.PlanSharesRequest(), wait_for_ready)

    def _plan(self, doc: dict[str, Any], request: Any, wait_for_ready: bool) -> dict[str, Any]:
        import grpc
        from google.protobuf import json_format

        from lola_deft.protos.deft.v1 import scheduler_pb2
        from lola_deft.scheduler.pac_convert import response_json

        json_format.ParseDict(doc, request)
        call = (
            self.client.plan_pipeline
            if isinstance(request, scheduler_pb2.PlanPipelineRequest)
            else self.client.plan_shares
        )
        try:
            response = call(request, wait_for_ready=wait_for_ready)
        except grpc.RpcError as error:
            raise self._failure(error) from error
        return response_json(response)

    def _failure(self, error: grpc.RpcError) -> AllocationFailed:
        """A refusal (bad request, infeasible) is an answer; anything else: unavailable."""
        import grpc

        answered = error.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        kind = AllocationFailed if answered else SchedulerUnavailable
        return kind(f"scheduler at {self.client.address}: {error.code().name}: {error.details()}")

    def close(self) -> None:
        self.client.close()


class FallbackAllocator:
    """The scheduler service, and the same policy solved in-process while it is down.

    A failed call (fail-fast: the service's client has a short deadline) switches to the
    fallback with a warning; the service is asked again after `retry_after_s`, without waiting
    for it to come up, and used again as soon as it answers. `available` and `fallback_rounds`
    are read by the metrics."""

    def __init__(
        self,
        service: GrpcAllocator,
        fallback: Allocator,
        retry_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.fallback = fallback
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.available = True
        self.fallback_rounds = 0
        self._retry_at = -float("inf")

    def allocate(self, request: AllocationRequest) -> Allocation:
        if self.clock() >= self._retry_at:
            try:
                # While degraded, a probe: a service that is still down fails at once.
                allocation = self.service.allocate(request, wait_for_ready=self.available)
            except SchedulerUnavailable as error:
                if self.available:
                    log.warning(
                        "%s; solving rounds in-process with the same policy, asking the "
                        "service again every %.0f s",
                        error,
                        self.retry_after_s,
                    )
                self.available = False
                self._retry_at = self.clock() + self.retry_after_s
            else:
                if not self.available:
                    log.info("scheduler service answers again; using it from now on")
                self.available = True
                return allocation
        self.fallback_rounds += 1
        return dataclasses.replace(self.fallback.allocate(request), source="fallback")

    def plan_pipeline(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The service's plan, or the same planner in-process while it is down."""
        if self.available:
            try:
                return self.service.plan_pipeline(doc, wait_for_ready=True)
            except SchedulerUnavailable as error:
                log.warning("%s; planning the pipeline in-process", error)
        return self.fallback.plan_pipeline(doc)

    def plan_shares(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.available:
            try:
                return self.service.plan_shares(doc, wait_for_ready=True)
            except SchedulerUnavailable as error:
                log.warning("%s; planning the shares in-process", error)
        return self.fallback.plan_shares(doc)

    def close(self) -> None:
        self.service.close()
        self.fallback.close()


def allocate_request(request: AllocationRequest) -> scheduler_pb2.AllocateRequest:
    """The Allocate message, built field by field (ParseDict over thousands of devices is
    slow); its JSON form is the same instance as `request.instance_doc()`."""
    from lola_deft.protos.deft.v1 import scheduler_pb2

    return scheduler_pb2.AllocateRequest(
        policy=request.policy,
        blocks=request.blocks,
        block_memory_bytes=request.block_memory_bytes,
        local_iterations=request.local_iterations,
        payload_bits=request.payload_bits,
        bandwidth_hz=request.bandwidth_hz,
        seed=request.seed,
        devices=[
            scheduler_pb2.DeviceReport(
                id=device.id,
                memory_bytes=device.memory_bytes,
                spectral_efficiency=device.spectral_efficiency,
                block_seconds=device.block_seconds,
            )
            for device in request.devices
        ],
    )

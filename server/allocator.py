"""How the round engine reaches a scheduler: a small interface with two implementations, the
scheduler microservice over gRPC and the scheduler package in process. Both speak the
scheduler's instance JSON, so they answer the same request the same way.
"""

from __future__ import annotations

from typing import Protocol

from lola_deft.server.messages import Allocation, AllocationRequest


class AllocationFailed(Exception):
    """No allocation this round (scheduler unreachable, request refused, infeasible)."""


class Allocator(Protocol):
    def allocate(self, request: AllocationRequest) -> Allocation:
        """Raises AllocationFailed saying why."""
        ...

    def close(self) -> None: ...


class InProcessAllocator:
    """The scheduler package called directly: no service to run (tests, small setups)."""

    def allocate(self, request: AllocationRequest) -> Allocation:
        from lola_deft.scheduler.errors import SchedulerError
        from lola_deft.scheduler.instance import parse_instance
        from lola_deft.scheduler.policies import solve

        try:
            instance = parse_instance(request.instance_doc())
            allocation = solve(instance, request.policy, seed=request.seed)
        except SchedulerError as error:
            raise AllocationFailed(f"scheduler: {error}") from error
        return Allocation.from_json(allocation.to_json())

    def close(self) -> None:
        pass


class GrpcAllocator:
    """The scheduler microservice (deft.v1.Scheduler/Allocate)."""

    def __init__(self, address: str, timeout_s: float, tls: object = None) -> None:
        from lola_deft.protos.credentials import PLAINTEXT
        from lola_deft.scheduler.client import SchedulerClient

        self.client = SchedulerClient(address, timeout_s=timeout_s, tls=tls or PLAINTEXT)  # type: ignore[arg-type]

    def allocate(self, request: AllocationRequest) -> Allocation:
        import grpc

        from lola_deft.scheduler.convert import request_from_instance_doc, response_to_json

        message = request_from_instance_doc(request.instance_doc(), request.policy, request.seed)
        try:
            response = self.client.allocate(message)
        except grpc.RpcError as error:
            raise AllocationFailed(
                f"scheduler at {self.client.address}: {error.code().name}: {error.details()}"
            ) from error
        return Allocation.from_json(response_to_json(response))

    def close(self) -> None:
        self.client.close()

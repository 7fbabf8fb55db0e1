"""How the round engine reaches a scheduler: a small interface with two implementations, the
scheduler microservice over gRPC and the scheduler package in process. Both speak the
scheduler's instance JSON, so they answer the same request the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lola_deft.server.messages import Allocation, AllocationRequest

if TYPE_CHECKING:
    from lola_deft.protos.credentials import TlsFiles
    from lola_deft.protos.deft.v1 import scheduler_pb2


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
    """The scheduler microservice (deft.v1.Scheduler/Allocate). gRPC is imported here, not at
    the top: the engine imports this module for the interface and must stay free of gRPC."""

    def __init__(self, address: str, timeout_s: float, tls: TlsFiles | None = None) -> None:
        from lola_deft.protos.credentials import PLAINTEXT
        from lola_deft.scheduler.client import SchedulerClient

        self.client = SchedulerClient(address, timeout_s=timeout_s, tls=tls or PLAINTEXT)

    def allocate(self, request: AllocationRequest) -> Allocation:
        import grpc

        from lola_deft.scheduler.convert import response_to_json

        try:
            response = self.client.allocate(allocate_request(request))
        except grpc.RpcError as error:
            raise AllocationFailed(
                f"scheduler at {self.client.address}: {error.code().name}: {error.details()}"
            ) from error
        return Allocation.from_json(response_to_json(response))

    def close(self) -> None:
        self.client.close()


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

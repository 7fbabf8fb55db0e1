"""Client of the scheduler microservice (the coordinator, `deft schedule --remote`)."""

from __future__ import annotations

from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, open_channel
from lola_deft.protos.deft.v1 import scheduler_pb2, scheduler_pb2_grpc
from lola_deft.protos.grpc_options import DEFAULT_MAX_MESSAGE_BYTES, message_size_options


class SchedulerClient:
    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: TlsFiles = PLAINTEXT,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = open_channel(address, tls, message_size_options(max_message_bytes))
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    def allocate(
        self, request: scheduler_pb2.AllocateRequest, *, wait_for_ready: bool = True
    ) -> scheduler_pb2.AllocateResponse:
        """Raises grpc.RpcError: INVALID_ARGUMENT or FAILED_PRECONDITION for bad rounds.
        Without wait_for_ready a service that is down fails at once (UNAVAILABLE)."""
        return self._stub.Allocate(request, timeout=self.timeout_s, wait_for_ready=wait_for_ready)

    def plan_pipeline(
        self, request: scheduler_pb2.PlanPipelineRequest, *, wait_for_ready: bool = True
    ) -> scheduler_pb2.PlanPipelineResponse:
        return self._stub.PlanPipeline(
            request, timeout=self.timeout_s, wait_for_ready=wait_for_ready
        )

    def plan_shares(
        self, request: scheduler_pb2.PlanSharesRequest, *, wait_for_ready: bool = True
    ) -> scheduler_pb2.PlanSharesResponse:
        return self._stub.PlanShares(request, timeout=self.timeout_s, wait_for_ready=wait_for_ready)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

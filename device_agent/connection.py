"""The agent's link to the coordinator: one channel, registration, heartbeats in the
background, the round calls, and how long to back off when the coordinator is away."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import grpc
import numpy as np

from lola_deft.device_agent.data_link import DataLink, DataPortUnreachable, split_host
from lola_deft.protos.credentials import TlsFiles, open_channel
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.protos.grpc_options import message_size_options, unreachable_reason
from lola_deft.protos.tensor_stream import from_chunks, to_chunks, upload_parts

# Refusals that concern one round only; the agent carries on with the next round.
ROUND_LEVEL = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Worth registering again after a pause: the coordinator is away, restarted or overloaded.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ALREADY_EXISTS,  # our id is still live from before a restart (--insecure)
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


log = logging.getLogger("deft.agent")
T = TypeVar("T")


class CoordinatorUnreachable(ConnectionError):
    """No answer from the coordinator's address in the attempts allowed: a wrong address, a
    closed port, a firewall, or certificates the two sides do not share."""


class PipelineTimeout(Exception):
    """A pipeline stage ran out of time waiting for the coordinator."""


class SessionLost(Exception):
    """The coordinator no longer knows this session (it restarted): register again."""


class Backoff:
    """Exponential back-off with jitter, reset after a success."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def reset(self) -> None:
        self._next = self.first_s

    def next_delay(self) -> float:
        delay = self._next * (1 + random.random() * 0.25)
        self._next = min(self._next * 2, self.max_s)
        return delay


class CoordinatorConnection:
    def __init__(
        self,
        address: str,
        tls: TlsFiles,
        max_message_bytes: int,
        stop: threading.Event,
        on_contact: Callable[[], None] = lambda: None,
    ) -> None:
        self.address = address
        self.stop = stop
        self.on_contact = on_contact  # the coordinator answered (health checks read it)
        self._channel = open_channel(address, tls, message_size_options(max_message_bytes))
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self.session = ""
        self.tls = tls
        self.data_link: DataLink | None = None  # the coordinator's data port, if it has one

    def register(
        self, request: coordinator_pb2.RegisterRequest
    ) -> coordinator_pb2.RegisterResponse:
        """Register and keep the new session alive with heartbeats until it is lost."""
        response = self.stub.Register(request, timeout=30, wait_for_ready=True)
        self.on_contact()
        self.session = response.session
        self.data_link = None
        if response.data_port:
            self.data_link = DataLink(split_host(self.address), response.data_port, self.tls)
            log.info("weights and gradients over the data port :%d", response.data_port)
        threading.Thread(
            target=self._heartbeat,
            args=(response.session, response.heartbeat_interval_s),
            daemon=True,
        ).start()
        return response

    def _heartbeat(self, session: str, interval: float) -> None:
        while not self.stop.wait(max(interval, 0.2)) and session == self.session:
            try:
                self.stub.SendHeartbeat(coordinator_pb2.Heartbeat(session=session), timeout=10)
                self.on_contact()
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return  # session gone; the round loop registers again

    def report(self, report: coordinator_pb2.ResourceReport) -> coordinator_pb2.RoundInstruction:
        """Long-poll for this round's instruction; SessionLost when the session is gone."""
        try:
            instruction = self.stub.ReportResources(report, timeout=3600)
            self.on_contact()
            return instruction
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise SessionLost(error.details()) from error
            raise

    def download(self, round_number: int) -> dict[str, np.ndarray]:
        request = coordinator_pb2.WeightsRequest(session=self.session, round=round_number)
        if self.data_link is not None:
            try:
                return self.data_link.download(request, timeout_s=600)
            except DataPortUnreachable as error:
                self._fall_back(error)
        return from_chunks(self.stub.DownloadWeights(request, timeout=600))

    def _fall_back(self, error: DataPortUnreachable) -> None:
        """A data port we cannot reach (a firewall, TLS names that differ): gRPC carries every
        transfer from now on, slower but complete."""
        log.warning("%s; weights and gradients go over gRPC instead", error)
        self.data_link = None

    def upload(
        self,
        header: coordinator_pb2.UploadHeader,
        gradients: Mapping[str, np.ndarray],
        timeout_s: float,
        dtype: str = "float32",
    ) -> coordinator_pb2.UploadAck:
        if self.data_link is not None:
            try:
                return self.data_link.upload(header, gradients, timeout_s, dtype)
            except DataPortUnreachable as error:
                self._fall_back(error)
        return self.stub.UploadGradient(upload_parts(header, gradients, dtype), timeout=timeout_s)

    # -- PAC+ pipelines: states over gRPC (the coordinator relays them between stages) ---------
    def upload_states(
        self, job: str, micro_batch: int, tensors: Mapping[str, np.ndarray], deadline_unix: float
    ) -> coordinator_pb2.StatesAck:
        """One micro-batch's states, as float16; retried while the coordinator says the
        pipeline is not there yet (UNAVAILABLE), until the job's deadline."""
        header = coordinator_pb2.StatesHeader(
            session=self.session, job=job, micro_batch=micro_batch
        )

        def parts() -> Iterator[coordinator_pb2.StatesPart]:
            yield coordinator_pb2.StatesPart(header=header)
            for chunk in to_chunks(tensors, dtype="float16"):
                yield coordinator_pb2.StatesPart(chunk=chunk)

        return self._until(
            deadline_unix, lambda left: self.stub.UploadStates(parts(), timeout=left)
        )

    def download_states(
        self, job: str, micro_batch: int, deadline_unix: float
    ) -> dict[str, np.ndarray]:
        """A stage's input, or the helpers' states for the owner; asks again while they are
        not ready, until the job's deadline."""
        request = coordinator_pb2.StatesRequest(
            session=self.session, job=job, micro_batch=micro_batch
        )
        return self._until(
            deadline_unix, lambda left: from_chunks(self.stub.DownloadStates(request, timeout=left))
        )

    def _until(self, deadline_unix: float, call: Callable[[float], T]) -> T:
        """`call(seconds left)`, again after UNAVAILABLE (not ready, a blip) till the deadline."""
        while True:
            left = deadline_unix - time.time()
            if left <= 0:
                raise PipelineTimeout("the pipeline's deadline passed")
            try:
                return call(left)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or self.stop.is_set():
                    raise
            self.stop.wait(0.2)

    def forget_session(self) -> None:
        """The coordinator no longer knows our session: stop its heartbeats."""
        self.session = ""

    def close(self) -> None:
        self.session = ""
        self._channel.close()


def reach(
    address: str,
    tls: TlsFiles,
    stop: threading.Event,
    timeout_s: float = 10.0,
    attempts: int = 5,
    max_backoff_s: float = 30.0,
) -> None:
    """Returns once something answers as the coordinator at `address` (any gRPC status but
    UNAVAILABLE or DEADLINE_EXCEEDED to an empty heartbeat); each failed try is logged with its
    reason. CoordinatorUnreachable after `attempts` tries (0: keep trying), so a wrong address
    is an error within seconds, before the model is loaded, not a silent hang."""
    channel = open_channel(address, tls, ())
    stub = coordinator_pb2_grpc.CoordinatorStub(channel)
    backoff = Backoff(max_s=max_backoff_s)
    started, tried = time.monotonic(), 0
    try:
        while not stop.is_set():
            tried += 1
            try:
                stub.SendHeartbeat(coordinator_pb2.Heartbeat(session=""), timeout=timeout_s)
                return
            except grpc.RpcError as error:
                if error.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    return  # it answered (refusing an empty session): reachable
                reason = unreachable_reason(error, timeout_s)
            if attempts and tried >= attempts:
                raise CoordinatorUnreachable(
                    f"cannot reach the coordinator at {address}: {reason} ({tried} attempts "
                    f"in {time.monotonic() - started:.0f} s; check --coordinator and the network, "
                    "or pass --connect-attempts 0 to keep trying)"
                )
            delay = backoff.next_delay()
            log.warning(
                "coordinator %s not reachable: %s; trying again in %.1f s", address, reason, delay
            )
            stop.wait(delay)
    finally:
        channel.close()

"""The scheduler microservice: the Allocate RPC plus standard health checking and reflection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Gauge, Histogram

from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, add_port
from lola_deft.protos.deft.v1 import scheduler_pb2, scheduler_pb2_grpc
from lola_deft.protos.grpc_options import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SCHEDULER_SERVICE,
    http_host,
    server_options,
)
from lola_deft.protos.identity import peer_of
from lola_deft.protos.malformed import RejectMalformed
from lola_deft.protos.metrics_endpoint import new_registry, serve_metrics
from lola_deft.scheduler.allocation import Allocation
from lola_deft.scheduler.convert import instance_from_request, response_from_allocation
from lola_deft.scheduler.errors import InfeasibleError, InstanceError
from lola_deft.scheduler.instance import Instance
from lola_deft.scheduler.pac_convert import (
    PIPELINE_LABEL,
    SHARES_LABEL,
    request_doc,
    solve_pipeline,
    solve_shares,
)
from lola_deft.scheduler.policies import DEFAULT_POLICY, solve
from lola_deft.scheduler.policy_names import known_policy

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_QUEUED_PER_WORKER = 16

ROLE = "scheduler"  # named in the error when its /metrics port is taken


class SchedulerMetrics:
    """Prometheus metrics of the scheduler microservice (its own registry)."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.requests = Counter(
            "deft_scheduler_requests_total",
            "Allocate and PAC+ plan requests by outcome",
            ["policy", "code"],
            registry=self.registry,
        )
        self.solve = Histogram(
            "deft_scheduler_allocate_solve_seconds",
            "Solve time of successful Allocate requests",
            ["policy"],
            registry=self.registry,
            buckets=(1e-4, 1e-3, 5e-3, 0.02, 0.1, 0.5, 1, 5),
        )
        self.devices = Gauge(
            "deft_scheduler_last_request_devices",
            "Devices in the last request",
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        return serve_metrics(self.registry, port, host, ROLE)


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    """Stateless: every request carries the whole round, so any replica can answer it. With
    `require_coordinator` only a caller whose certificate names the coordinator is served."""

    def _authorise(self, context: grpc.ServicerContext, label: str) -> None:
        if self.require_coordinator and not peer_of(context.auth_context()).is_coordinator:
            self.metrics.requests.labels(label, "PERMISSION_DENIED").inc()
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "only the coordinator's certificate (urn:lola-deft:coordinator) may allocate",
            )

    def _answer(self, context: grpc.ServicerContext, label: str, solve_it: Callable[[], T]) -> T:
        """Run a solver: bad input is INVALID_ARGUMENT naming the field, no feasible answer is
        FAILED_PRECONDITION saying why; every outcome is counted under `label`."""
        self._authorise(context, label)
        try:
            answer = solve_it()
        except InstanceError as error:
            self.metrics.requests.labels(label, "INVALID_ARGUMENT").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except InfeasibleError as error:
            self.metrics.requests.labels(label, "FAILED_PRECONDITION").inc()
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"infeasible: {error}")
        except Exception as error:  # a solver bug: say so (INTERNAL, not UNKNOWN), keep serving
            log.exception("%s failed", label)
            self.metrics.requests.labels(label, "INTERNAL").inc()
            context.abort(grpc.StatusCode.INTERNAL, f"solver failed: {type(error).__name__}")
        self.metrics.requests.labels(label, "OK").inc()
        return answer

    def _plan(self, context: grpc.ServicerContext, label: str, solve_plan: Callable[[], T]) -> T:
        """A PAC+ plan, with Allocate's checks, error statuses and metrics."""
        started = time.perf_counter()
        answer = self._answer(context, label, solve_plan)
        self.metrics.solve.labels(label).observe(time.perf_counter() - started)
        return answer

    def PlanPipeline(
        self, request: scheduler_pb2.PlanPipelineRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.PlanPipelineResponse:
        self.metrics.devices.set(len(request.devices))
        return self._plan(context, PIPELINE_LABEL, lambda: solve_pipeline(request_doc(request)))

    def PlanShares(
        self, request: scheduler_pb2.PlanSharesRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.PlanSharesResponse:
        self.metrics.devices.set(len(request.devices))
        return self._plan(context, SHARES_LABEL, lambda: solve_shares(request_doc(request)))

    def __init__(
        self, metrics: SchedulerMetrics | None = None, *, require_coordinator: bool = False
    ) -> None:
        self.metrics = metrics or SchedulerMetrics()
        self.require_coordinator = require_coordinator

    def Allocate(
        self, request: scheduler_pb2.AllocateRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.AllocateResponse:
        policy = request.policy or DEFAULT_POLICY
        label = known_policy(policy)  # every metric label: a fixed set, whatever was asked
        self.metrics.devices.set(len(request.devices))
        seed = request.seed if request.HasField("seed") else None

        def allocate() -> tuple[Instance, Allocation]:
            instance = instance_from_request(request)
            return instance, solve(instance, policy, seed=seed)

        instance, allocation = self._answer(context, label, allocate)
        self.metrics.solve.labels(label).observe(allocation.solve_seconds)
        log.info(
            "allocated %d blocks over %d devices with %s: latency %.4g s in %.2f ms",
            instance.num_blocks,
            instance.num_devices,
            policy,
            allocation.latency_s,
            allocation.solve_seconds * 1e3,
        )
        return response_from_allocation(allocation)


class RunningScheduler:
    """A started server and the port it bound (useful when asked for port 0)."""

    def __init__(self, server: grpc.Server, port: int, health_servicer: health.HealthServicer):
        self.server = server
        self.port = port
        self.metrics_port: int | None = None
        self._health = health_servicer

    def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING first so load balancers drain, then stop."""
        self._health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def start_scheduler(
    host: str = "[::]",
    port: int = 50051,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    workers: int = 4,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    tls: TlsFiles = PLAINTEXT,
    require_coordinator: bool = False,
) -> RunningScheduler:
    # A thread pool, not grpc.aio: every Allocate is short, CPU-bound work with nothing to wait
    # for, so threads cost nothing idle. The bounds: `workers` solve at once, at most
    # MAX_QUEUED_PER_WORKER more wait (beyond that RESOURCE_EXHAUSTED at once, never an
    # unbounded queue), each request at most max_message_bytes.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=server_options(max_message_bytes),
        interceptors=[RejectMalformed()],
        maximum_concurrent_rpcs=workers * (1 + MAX_QUEUED_PER_WORKER),
    )
    metrics = SchedulerMetrics()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(
        SchedulerService(metrics, require_coordinator=require_coordinator), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", SCHEDULER_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        bound = add_port(server, f"{host}:{port}", tls)
    except RuntimeError:  # grpc's "Failed to bind": in use, or not an address of this host
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind the scheduler to {host}:{port}")
    server.start()
    running = RunningScheduler(server, bound, health_servicer)
    running.metrics_port = (
        metrics.serve(metrics_port, metrics_host or http_host(host))
        if metrics_port is not None
        else None
    )
    return running

"""The scheduler microservice end to end: a real `deft scheduler serve` process on loopback."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from lola_deft.protos.deft.v1 import scheduler_pb2
from lola_deft.scheduler import parse_instance, solve
from lola_deft.scheduler.client import SchedulerClient
from lola_deft.scheduler.convert import request_from_instance_doc, response_to_json
from lola_deft.scheduler.service import start_scheduler
from lola_deft.scheduler.synthetic import PaperSetting, paper_round
from tests.helpers import start_scheduler_process

EXAMPLE = json.loads(
    (Path(__file__).parents[2] / "scheduler" / "examples" / "paper_round.json").read_text()
)


@pytest.fixture(scope="module")
def scheduler_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process, address = start_scheduler_process()
    yield process, address
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture
def client(scheduler_process: tuple[subprocess.Popen[str], str]) -> Iterator[SchedulerClient]:
    with SchedulerClient(scheduler_process[1], timeout_s=60) as client:
        yield client


def allocate(client: SchedulerClient, doc: dict[str, Any], policy: str = "") -> Any:
    return client.allocate(request_from_instance_doc(doc, policy))


@pytest.mark.parametrize("policy", ["", "jbba", "ba", "crunch", "dual-ascent", "comm-aware"])
def test_allocate_matches_the_local_solver(client: SchedulerClient, policy: str) -> None:
    response = allocate(client, EXAMPLE, policy)
    local = solve(parse_instance(EXAMPLE), policy or "jbba").to_json()
    remote = response_to_json(response)
    assert remote["policy"] == (policy or "jbba")
    assert remote["latency_s"] == pytest.approx(local["latency_s"], rel=1e-12)
    assert [a["device"] for a in remote["assignment"]] == [a["device"] for a in local["assignment"]]
    assert [a["block"] for a in remote["assignment"]] == list(range(1, 13))


def test_health_and_reflection(scheduler_process: tuple[subprocess.Popen[str], str]) -> None:
    with grpc.insecure_channel(scheduler_process[1]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "deft.v1.Scheduler"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"deft.v1.Scheduler", "grpc.health.v1.Health"} <= services


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("payload_bits"), "payload_bits: is required"),
        (
            lambda d: d["devices"][2].update(spectral_efficiency=-1.0),
            "devices[2].spectral_efficiency",
        ),
        (lambda d: d["block_memory_bytes"].pop(), "block_memory_bytes: must have 12 entries"),
        (lambda d: d["devices"][1].update(id=d["devices"][0]["id"]), "duplicate device id"),
    ],
)
def test_malformed_requests_get_invalid_argument(
    client: SchedulerClient, mutate: Any, message: str
) -> None:
    doc = copy.deepcopy(EXAMPLE)
    mutate(doc)
    with pytest.raises(grpc.RpcError) as caught:
        allocate(client, doc)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_get_invalid_argument(client: SchedulerClient, value: float) -> None:
    request = request_from_instance_doc(EXAMPLE)
    request.devices[4].memory_bytes = value
    with pytest.raises(grpc.RpcError) as caught:
        client.allocate(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("devices[4].memory_bytes: must be finite")


def test_unknown_policy_gets_invalid_argument(client: SchedulerClient) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        allocate(client, EXAMPLE, "fastest")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("policy: unknown policy 'fastest'")


def test_infeasible_requests_get_failed_precondition(client: SchedulerClient) -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["devices"] = doc["devices"][:5]
    with pytest.raises(grpc.RpcError) as caught:
        allocate(client, doc)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "12 blocks need 12 distinct devices, but only 5 reported" in caught.value.details()


def test_requests_above_the_default_4_mib_limit_are_served(client: SchedulerClient) -> None:
    doc = paper_round(PaperSetting(num_devices=12000, num_blocks=48), np.random.default_rng(1))
    for device in doc["devices"]:  # measured profiles make the request about 5 MiB
        factor = device.pop("compute_factor")
        device["block_seconds"] = [s / factor for s in doc["block_seconds"]]
    request = request_from_instance_doc(doc, "jbba")
    assert request.ByteSize() > 4 * 2**20
    response = client.allocate(request)
    assert len(response.assignment) == 48


def test_oversized_requests_get_resource_exhausted() -> None:
    running = start_scheduler("127.0.0.1", 0, max_message_bytes=2**20)
    try:
        doc = paper_round(PaperSetting(num_devices=30000), np.random.default_rng(2))
        request = request_from_instance_doc(doc)
        assert request.ByteSize() > 2**20
        with SchedulerClient(f"127.0.0.1:{running.port}", timeout_s=30) as client:
            with pytest.raises(grpc.RpcError) as caught:
                client.allocate(request)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The server is unharmed: a normal request still works.
            assert len(client.allocate(request_from_instance_doc(EXAMPLE)).assignment) == 12
    finally:
        running.stop(grace=None)


def test_service_stops_cleanly_on_sigterm() -> None:
    process, _ = start_scheduler_process()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_request_fields_mirror_the_json_instance_format() -> None:
    request = request_from_instance_doc(EXAMPLE, "ba", seed=3)
    assert isinstance(request, scheduler_pb2.AllocateRequest)
    assert request.blocks == 12 and request.policy == "ba" and request.seed == 3
    assert request.devices[0].id == EXAMPLE["devices"][0]["id"]


def test_a_solver_bug_is_internal_and_the_service_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lola_deft.scheduler.service as service

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("f(a) and f(b) must have different signs")

    running = start_scheduler("127.0.0.1", 0)
    try:
        with SchedulerClient(f"127.0.0.1:{running.port}", timeout_s=30) as client:
            with monkeypatch.context() as patched:
                patched.setattr(service, "solve", broken)
                with pytest.raises(grpc.RpcError) as caught:
                    allocate(client, EXAMPLE)
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert caught.value.details() == "solver failed: ValueError"
            assert len(allocate(client, EXAMPLE).assignment) == 12
    finally:
        running.stop(grace=None)

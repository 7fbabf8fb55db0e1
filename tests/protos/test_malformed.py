"""A bounded fuzz of both services: random bytes and random field values on every RPC.

5,000+ messages against a real coordinator (its own event loop, loopback) and a real scheduler
in this process. Each call must end in a precise status (never UNKNOWN, never INTERNAL), neither
server may crash, and nothing may change: no device registered, no round run, the adapters
bit-for-bit the same.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.deft.v1 import coordinator_pb2, scheduler_pb2
from lola_deft.scheduler.service import start_scheduler
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.service import start_coordinator
from lola_deft.server.training_state import adapter_digest

ROUNDS = 420  # x 12 messages a round (6 RPCs, random bytes and random fields) = 5,040
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
NUMBERS = [0.0, -1.0, 1.0, 1e308, -1e308, math.nan, math.inf, -math.inf, 5e-324, 3e38]
INTEGERS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, 12]
TEXTS = ["", "dev0", "x" * 300, "\x00\x01", "é" * 40, "../../etc/passwd", "' OR 1=1 --"]


def random_value(field: FieldDescriptor, rng: random.Random, depth: int) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return random_message(field.message_type, rng, depth + 1)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice([*NUMBERS, rng.uniform(-1e6, 1e6)])
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice([*TEXTS, "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(20))])
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == FieldDescriptor.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    low, high = {
        FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
        FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
        FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
        FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
    }[field.cpp_type]
    return min(max(rng.choice(INTEGERS), low), high)


def random_message(descriptor: Descriptor, rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """Random values for a random subset of the fields (as a dict for the message class)."""
    values: dict[str, Any] = {}
    for field in descriptor.fields:
        if depth > 2 or rng.random() < 0.3:
            continue
        if field.is_repeated:
            values[field.name] = [random_value(field, rng, depth) for _ in range(rng.randrange(6))]
        elif field.containing_oneof is None or not any(
            other.name in values for other in field.containing_oneof.fields
        ):
            values[field.name] = random_value(field, rng, depth)
    return values


def build(message_class: type[Message], rng: random.Random, session: str) -> Message:
    values = random_message(message_class.DESCRIPTOR, rng)
    if "session" in values and rng.random() < 0.5:
        values["session"] = session  # a real session now and then: deeper into the checks
    return message_class(**values)


def payload(message_class: type[Message], rng: random.Random, session: str) -> bytes:
    """Half random bytes, half a random (well-formed) message."""
    if rng.random() < 0.5:
        return rng.randbytes(rng.randrange(1, 200))
    return build(message_class, rng, session).SerializeToString()


CODES: Counter[str] = Counter()  # statuses seen: the fuzz must reach past parsing


def expect_precise(call: Any) -> None:
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except grpc.RpcError as error:
        CODES[error.code().name] += 1
        assert error.code() not in FORBIDDEN, (error.code(), error.details())
    else:
        CODES["OK"] += 1


@pytest.mark.timeout(300)
def test_random_bytes_and_fields_on_every_rpc_change_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    scheduler = start_scheduler("127.0.0.1", 0)
    config = CoordinatorConfig(
        model_dir=tiny_model_dir,
        data_dir=EMBEDDED_TASK_DIR,
        rounds=1,
        min_agents=1000,  # no round starts: every call meets a coordinator waiting for agents
        report_poll_s=0.05,
        checkpoint_dir=tmp_path / "ck",
        scheduler_address=f"127.0.0.1:{scheduler.port}",
    )
    running = start_coordinator(config, host="127.0.0.1", port=0)
    rng = random.Random(20261127)
    try:
        digest = adapter_digest(running.trainer.snapshot())
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            welcome = coordinator_pb2.RegisterResponse.FromString(
                channel.unary_unary("/deft.v1.Coordinator/Register")(
                    coordinator_pb2.RegisterRequest(
                        device_id="honest", model_fingerprint=model_fingerprint(tiny_model_dir)
                    ).SerializeToString(),
                    timeout=10,
                )
            )
            session = welcome.session
            unary = {
                "/deft.v1.Coordinator/Register": coordinator_pb2.RegisterRequest,
                "/deft.v1.Coordinator/SendHeartbeat": coordinator_pb2.Heartbeat,
                "/deft.v1.Coordinator/ReportResources": coordinator_pb2.ResourceReport,
            }
            with grpc.insecure_channel(f"127.0.0.1:{scheduler.port}") as scheduler_channel:
                allocate = scheduler_channel.unary_unary("/deft.v1.Scheduler/Allocate")
                plans = {
                    scheduler_channel.unary_unary("/deft.v1.Scheduler/PlanPipeline"): (
                        scheduler_pb2.PlanPipelineRequest
                    ),
                    scheduler_channel.unary_unary("/deft.v1.Scheduler/PlanShares"): (
                        scheduler_pb2.PlanSharesRequest
                    ),
                }
                download = channel.unary_stream("/deft.v1.Coordinator/DownloadWeights")
                upload = channel.stream_unary("/deft.v1.Coordinator/UploadGradient")
                download_states = channel.unary_stream("/deft.v1.Coordinator/DownloadStates")
                upload_states = channel.stream_unary("/deft.v1.Coordinator/UploadStates")
                sent = 0
                for _ in range(ROUNDS):
                    for _variant in range(2):
                        for method, message_class in unary.items():
                            data = payload(message_class, rng, session)
                            expect_precise(lambda: channel.unary_unary(method)(data, timeout=5))  # noqa: B023
                        data = payload(coordinator_pb2.WeightsRequest, rng, session)
                        expect_precise(lambda: download(data, timeout=5))  # noqa: B023
                        parts = [
                            payload(coordinator_pb2.GradientPart, rng, session)
                            for _ in range(rng.randrange(1, 4))
                        ]
                        expect_precise(lambda: upload(iter(parts), timeout=5))  # noqa: B023
                        data = payload(coordinator_pb2.StatesRequest, rng, session)
                        expect_precise(lambda: download_states(data, timeout=5))  # noqa: B023
                        states = [
                            payload(coordinator_pb2.StatesPart, rng, session)
                            for _ in range(rng.randrange(1, 4))
                        ]
                        expect_precise(lambda: upload_states(iter(states), timeout=5))  # noqa: B023
                        request = payload(scheduler_pb2.AllocateRequest, rng, session)
                        expect_precise(lambda: allocate(request, timeout=10))  # noqa: B023
                        for plan, kind in plans.items():
                            request = payload(kind, rng, session)
                            expect_precise(lambda: plan(request, timeout=10))  # noqa: B023
                        sent += 8 + len(parts) + len(states)
        assert sent >= 5000
        assert {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OK"} <= set(CODES)
        # Nothing changed, and both servers still answer properly.
        assert running.thread.is_alive()
        assert running.call(lambda: {r.device_id for r in running.engine.registry.live()}) == {
            "honest"
        }
        assert running.engine.completed == 0 and running.engine.current is None
        assert adapter_digest(running.trainer.snapshot()) == digest
        with grpc.insecure_channel(f"127.0.0.1:{scheduler.port}") as scheduler_channel:
            from lola_deft.scheduler.client import SchedulerClient

            with SchedulerClient(f"127.0.0.1:{scheduler.port}") as client:
                valid = scheduler_pb2.AllocateRequest(
                    blocks=1,
                    block_memory_bytes=[1.0],
                    local_iterations=1,
                    payload_bits=1e6,
                    bandwidth_hz=1e6,
                    devices=[
                        scheduler_pb2.DeviceReport(
                            id="d", memory_bytes=10.0, spectral_efficiency=1.0, block_seconds=[1.0]
                        )
                    ],
                )
                assert len(client.allocate(valid).assignment) == 1
    finally:
        running.stop(grace=None)
        scheduler.stop(grace=None)

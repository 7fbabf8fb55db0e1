"""The coordinator's gRPC surface: every rejection path has a clear status and changes nothing.

The coordinator and scheduler run in this process on loopback; the test plays three agents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.protos.tensor_stream import from_chunks, upload_parts
from lola_deft.server.service import RunningCoordinator
from tests.helpers import eventually
from tests.server.one_round import (
    PlayedAgent,
    gradient,
    one_round_coordinator,
    register,
    report,
    start_round,
)


def upload(
    stub: coordinator_pb2_grpc.CoordinatorStub,
    agent: PlayedAgent,
    tensors: dict[str, np.ndarray],
    *,
    round_number: int = 1,
    block: int | None = None,
    dtype: str = "float32",
) -> coordinator_pb2.UploadAck:
    block = block if block is not None else agent.instruction.block  # type: ignore[union-attr]
    header = coordinator_pb2.UploadHeader(session=agent.session, round=round_number, block=block)
    return stub.UploadGradient(upload_parts(header, tensors, dtype), timeout=30)


def rejected(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_a_round_with_every_rejection_path(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    tiny_model_dir: Path,
) -> None:
    agents = start_round(stub, tiny_model_dir)
    first, second, third = agents
    weights = from_chunks(
        stub.DownloadWeights(
            coordinator_pb2.WeightsRequest(session=first.session, round=1), timeout=30
        )
    )
    assert set(weights) == set(coordinator.trainer.shapes)
    collector = coordinator.engine.current.collector  # type: ignore[union-attr]
    good = gradient(coordinator, first, weights)

    def assert_nothing_stored() -> None:
        assert collector.uploads == {}

    cases = [
        (
            lambda: upload(stub, first, good, round_number=2),
            grpc.StatusCode.FAILED_PRECONDITION,
            "round 2 is not running",
        ),
        (
            lambda: upload(
                stub,
                first,
                gradient(coordinator, first, weights, block=second.instruction.block),  # type: ignore[union-attr]
                block=second.instruction.block,
            ),  # type: ignore[union-attr]
            grpc.StatusCode.PERMISSION_DENIED,
            "holds block",
        ),
        (
            lambda: upload(stub, PlayedAgent("ghost", "no-such-session", first.instruction), good),
            grpc.StatusCode.NOT_FOUND,
            "unknown session",
        ),
        (
            lambda: stub.UploadGradient(iter([]), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty stream",
        ),
        (
            lambda: stub.DownloadWeights(
                coordinator_pb2.WeightsRequest(session=first.session, round=7), timeout=10
            ).next(),
            grpc.StatusCode.FAILED_PRECONDITION,
            "round 7 is not running",
        ),
        (
            lambda: stub.ReportResources(
                coordinator_pb2.ResourceReport(
                    session=first.session, available_memory_bytes=float("nan")
                ),
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "available_memory_bytes",
        ),
        (
            lambda: stub.Register(
                coordinator_pb2.RegisterRequest(device_id="x", model_fingerprint="bert-L99"),
                timeout=10,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "model_fingerprint",
        ),
        (
            lambda: stub.Register(coordinator_pb2.RegisterRequest(device_id=""), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "device_id",
        ),
    ]
    for call, code, message in cases:
        error = rejected(call)
        assert error.code() == code, (message, error.details())
        assert message in error.details(), error.details()
        assert_nothing_stored()

    before = coordinator.trainer.snapshot()
    assert not upload(stub, first, good).duplicate
    assert upload(stub, first, good).duplicate  # a retry is acknowledged, not applied twice
    assert len(collector.uploads) == 1
    for agent in (second, third):
        assert not upload(stub, agent, gradient(coordinator, agent, weights)).duplicate
    coordinator.engine.finished.wait(60)
    after = coordinator.trainer.snapshot()
    assert coordinator.engine.completed == 1
    # One Adam step from zero moments moves every tensor by exactly lr against the gradient sign.
    step = coordinator.engine.config.learning_rate
    for name in before:
        np.testing.assert_allclose(after[name], before[name] - step, rtol=0, atol=1e-6)
    late = rejected(lambda: upload(stub, first, good))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_half_precision_uploads_halve_the_payload_and_train_the_same(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with one_round_coordinator(tiny_model_dir, tmp_path, upload_dtype="bfloat16") as running:
        trainer = running.trainer  # S of the latency model halves
        assert 2 * (trainer.block_bits + trainer.head_bits) == (
            trainer.state.loaded.block_payload_bits(1)
        )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            fingerprint = model_fingerprint(tiny_model_dir)
            welcome = stub.Register(
                coordinator_pb2.RegisterRequest(device_id="probe", model_fingerprint=fingerprint),
                timeout=10,
            )
            assert welcome.upload_dtype == "bfloat16"  # what agents are told to send
            agents = start_round(stub, tiny_model_dir)
            weights = from_chunks(
                stub.DownloadWeights(
                    coordinator_pb2.WeightsRequest(session=agents[0].session, round=1), timeout=30
                )
            )
            before = running.trainer.snapshot()
            for agent in agents:
                tensors = gradient(running, agent, weights)
                ack = upload(stub, agent, tensors, dtype="bfloat16")
                assert ack.received_bytes == sum(t.size for t in tensors.values()) * 2
            running.engine.finished.wait(60)
            after = running.trainer.snapshot()
    step = running.engine.config.learning_rate  # the widened gradients took one Adam step
    for name in before:
        np.testing.assert_allclose(after[name], before[name] - step, rtol=0, atol=1e-6)


def test_a_refused_gradient_ends_its_devices_hold_and_changes_nothing(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    tiny_model_dir: Path,
) -> None:
    agents = start_round(stub, tiny_model_dir)
    weights = coordinator.engine.current.weights  # type: ignore[union-attr]
    collector = coordinator.engine.current.collector  # type: ignore[union-attr]
    before = coordinator.trainer.snapshot()

    def shape(good: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**good, next(iter(good)): np.zeros((1, 2), np.float32)}

    def nan(good: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = next(iter(good))
        return {**good, name: np.full(good[name].shape, np.nan, np.float32)}

    def huge(good: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.full_like(value, 3e38) for name, value in good.items()}  # finite

    for agent, spoil, message in zip(
        agents,
        (shape, nan, huge),
        ("shape [1, 2], expected", "non-finite", "exceeds --max-grad-norm"),
        strict=True,
    ):
        good = gradient(coordinator, agent, weights)
        error = rejected(lambda: upload(stub, agent, spoil(good)))  # noqa: B023
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details()
        # The device no longer holds its block: no retry, no waiting for the 60 s deadline.
        again = rejected(lambda: upload(stub, agent, good))  # noqa: B023
        assert again.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.FAILED_PRECONDITION,  # the round closed meanwhile
        )
    assert coordinator.engine.finished.wait(30)
    assert collector.uploads == {}
    record = coordinator.engine.history.rounds[-1]
    assert record.blocks_updated == [] and len(record.refusals) == 3
    after = coordinator.trainer.snapshot()
    assert all(np.array_equal(before[name], after[name]) for name in before)
    assert all(np.all(np.isfinite(value)) for value in after.values())


def test_dead_agents_do_not_stall_the_round(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    tiny_model_dir: Path,
) -> None:
    agents = start_round(stub, tiny_model_dir)
    coordinator.engine.registry.liveness_timeout_s = 1.0  # from now on, silence means dead
    weights = coordinator.engine.current.weights  # type: ignore[union-attr]
    upload(stub, agents[0], gradient(coordinator, agents[0], weights))
    # The other two never upload nor send heartbeats: the round closes without waiting 60 s.
    assert coordinator.engine.finished.wait(30)
    record = coordinator.engine.history.rounds[-1]
    assert record.blocks_updated == [agents[0].instruction.block]  # type: ignore[union-attr]


def scrape(port: int) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def test_metrics_are_exported_with_prometheus_names(tiny_model_dir: Path, tmp_path: Path) -> None:
    with one_round_coordinator(tiny_model_dir, tmp_path, metrics_port=0) as running:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            agents = start_round(stub, tiny_model_dir)
            weights = running.engine.current.weights  # type: ignore[union-attr]
            for agent in agents:
                upload(stub, agent, gradient(running, agent, weights))
        assert running.engine.finished.wait(60)
        assert running.metrics_port is not None
        samples = scrape(running.metrics_port)
    record = running.engine.history.rounds[0]
    assert record.eval is not None
    assert samples['deft_round_latency_seconds{kind="measured"}'] == pytest.approx(
        record.measured_wall_s
    )
    assert samples['deft_round_latency_seconds{kind="modelled"}'] == pytest.approx(
        record.modelled_latency_s
    )
    assert samples["deft_rounds_total"] == 1.0
    for agent in agents:
        block = agent.instruction.block  # type: ignore[union-attr]
        assert samples[f'deft_device_block{{device="{agent.device_id}"}}'] == block
        assert samples[f'deft_device_bandwidth_hz{{device="{agent.device_id}"}}'] > 0
        assert samples[f'deft_device_spectral_efficiency{{device="{agent.device_id}"}}'] == 2.0
        assert f'deft_device_upload_seconds{{device="{agent.device_id}"}}' in samples
        assert samples[f'deft_device_memory_bytes{{device="{agent.device_id}"}}'] == 8e9
    assert samples['deft_eval_metric{metric="accuracy"}'] == pytest.approx(
        record.eval.scores["accuracy"]
    )
    assert samples['deft_bytes_total{direction="up"}'] > 0
    assert "deft_training_loss" in samples and "deft_scheduler_solve_seconds" in samples
    assert samples["deft_live_agents"] == 3
    counters = {k.split("{")[0] for k in samples if k.split("{")[0].endswith("_total")}
    assert counters >= {"deft_rounds_total", "deft_bytes_total"}


def test_hostile_uploads_are_refused_from_their_header(
    coordinator: RunningCoordinator,
    stub: coordinator_pb2_grpc.CoordinatorStub,
    tiny_model_dir: Path,
) -> None:
    agents = start_round(stub, tiny_model_dir)
    first = agents[0]
    collector = coordinator.engine.current.collector  # type: ignore[union-attr]
    header = coordinator_pb2.UploadHeader(session=first.session, round=1, block=1)
    chunk = coordinator_pb2.TensorChunk(name="x", shape=[65536] * 4, dtype="float32")

    no_header = rejected(
        lambda: stub.UploadGradient(iter([coordinator_pb2.GradientPart(chunk=chunk)]), timeout=10)
    )
    assert no_header.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must open with an UploadHeader" in no_header.details()

    block = first.instruction.block  # type: ignore[union-attr]
    name = coordinator.trainer.block_names[block][0]
    huge = coordinator_pb2.TensorChunk(name=name, shape=[65536] * 4, dtype="float32")
    overflow = rejected(
        lambda: stub.UploadGradient(
            iter(
                [
                    coordinator_pb2.GradientPart(header=header),
                    coordinator_pb2.GradientPart(chunk=huge),
                ]
            ),
            timeout=10,
        )
    )
    assert overflow.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,  # when block 1 went to another device
    )

    # A made-up session with a 512 MiB stream behind it: refused at the header, the rest unread.
    sent = []

    def big_stream() -> Iterator[coordinator_pb2.GradientPart]:
        yield coordinator_pb2.GradientPart(
            header=coordinator_pb2.UploadHeader(session="made-up", round=1, block=1)
        )
        for i in range(512):
            sent.append(i)
            yield coordinator_pb2.GradientPart(
                chunk=coordinator_pb2.TensorChunk(
                    name="x",
                    shape=[512 * 2**18],
                    dtype="float32",
                    offset=i * 2**20,
                    total_bytes=512 * 2**20,
                    data=bytes(2**20),
                )
            )

    forged = rejected(lambda: stub.UploadGradient(big_stream(), timeout=30))
    assert forged.code() == grpc.StatusCode.NOT_FOUND
    assert len(sent) < 512
    assert collector.uploads == {}


def test_registration_bounds_every_free_text_field(
    stub: coordinator_pb2_grpc.CoordinatorStub, tiny_model_dir: Path
) -> None:
    fingerprint = model_fingerprint(tiny_model_dir)
    cases = {
        "device_id": coordinator_pb2.RegisterRequest(
            device_id="d" * 10_000, model_fingerprint=fingerprint
        ),
        "hardware": coordinator_pb2.RegisterRequest(
            device_id="ok", hardware="h" * 100_000, model_fingerprint=fingerprint
        ),
        "capabilities": coordinator_pb2.RegisterRequest(
            device_id="ok", capabilities=["cpu"] * 1000, model_fingerprint=fingerprint
        ),
        "model_fingerprint": coordinator_pb2.RegisterRequest(
            device_id="ok", model_fingerprint="f" * 10_000
        ),
    }
    for field, request in cases.items():
        error = rejected(lambda request=request: stub.Register(request, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error.details().startswith(field)
        assert len(error.details()) < 200


def test_a_message_larger_than_a_chunk_is_refused_unread(
    stub: coordinator_pb2_grpc.CoordinatorStub, tiny_model_dir: Path
) -> None:
    request = coordinator_pb2.RegisterRequest(
        device_id="big", hardware="h" * (5 * 2**20), model_fingerprint="x"
    )
    error = rejected(lambda: stub.Register(request, timeout=10))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_long_polls_never_delay_heartbeats(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Hundreds of reports waiting for a round that cannot start yet hold no thread: heartbeats
    and registrations are answered meanwhile, and cancelled reports leave nothing behind."""
    waiting = 300
    with (
        one_round_coordinator(tiny_model_dir, tmp_path, min_agents=10_000) as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        fingerprint = model_fingerprint(tiny_model_dir)
        agents = [register(stub, f"dev{i}", fingerprint) for i in range(waiting)]
        polls = [stub.ReportResources.future(report(a.session), timeout=60) for a in agents]
        assert eventually(lambda: running.call(running.engine.waiting_reports) == waiting)
        for agent in agents[:50]:
            assert (
                stub.SendHeartbeat(
                    coordinator_pb2.Heartbeat(session=agent.session), timeout=10
                ).round
                == 0
            )
        late = register(stub, "late", fingerprint)
        assert late.session
        for poll in polls:
            poll.cancel()
        assert eventually(lambda: running.call(running.engine.waiting_reports) == 0)

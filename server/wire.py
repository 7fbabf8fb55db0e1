"""deft.v1 protobuf <-> the coordinator's own types, and the reading of an upload stream.

The only coordinator module, with service.py, that knows protobuf. An upload is read header
first: the header is checked by the coordinator before any gradient byte is buffered, and the
stream is then held to exactly the tensors, shapes and bytes of the expected block.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.identity import PLAINTEXT_PEER, Peer
from lola_deft.protos.tensor_stream import StreamTooLarge, TensorAssembler, TensorStreamError
from lola_deft.server.coordinator import Coordinator
from lola_deft.server.errors import CoordinatorError, DeadlinePassed, InvalidRequest, TooLarge
from lola_deft.server.messages import (
    Instruction,
    PacReport,
    PipelineTask,
    Registration,
    ResourceReport,
    UploadAck,
    UploadHeader,
    Welcome,
)


def registration(request: pb.RegisterRequest) -> Registration:
    return Registration(
        device_id=request.device_id,
        hardware=request.hardware,
        agent_version=request.agent_version,
        capabilities=tuple(request.capabilities),
        model_fingerprint=request.model_fingerprint,
    )


def welcome_message(welcome: Welcome) -> pb.RegisterResponse:
    return pb.RegisterResponse(
        session=welcome.session,
        heartbeat_interval_s=welcome.heartbeat_interval_s,
        model_name=welcome.model_name,
        lora_rank=welcome.lora_rank,
        lora_alpha=welcome.lora_alpha,
        lora_target_modules=list(welcome.lora_target_modules),
        blocks=welcome.blocks,
        task=welcome.task,
        num_labels=welcome.num_labels,
        batch_size=welcome.batch_size,
        max_seq_length=welcome.max_seq_length,
        round=welcome.round,
        agent_index=welcome.agent_index,
        upload_dtype=welcome.upload_dtype,
        method=welcome.method,
    )


def resource_report(request: pb.ResourceReport, device_id: str) -> ResourceReport:
    """Block costs come in any order; they must name each block 1..n exactly once."""
    costs = sorted(request.block_costs, key=lambda cost: cost.block)
    if [cost.block for cost in costs] != list(range(1, len(costs) + 1)):
        raise InvalidRequest("block_costs", "need exactly one entry for each block 1..L")
    channel = request.channel
    return ResourceReport(
        device_id=device_id,
        round=request.round,
        available_memory_bytes=request.available_memory_bytes,
        channel_gain=channel.channel_gain,
        snr_db=channel.snr_db,
        spectral_efficiency=channel.spectral_efficiency,
        measured_uplink_bps=channel.measured_uplink_bps,
        block_seconds=tuple(cost.seconds_per_iteration for cost in costs),
        block_memory_bytes=tuple(cost.peak_memory_bytes for cost in costs),
        pac=PacReport(
            samples=request.pac.samples,
            cached_samples=request.pac.cached_samples,
            step_seconds=request.pac.step_seconds,
            needs_pipeline=request.pac.needs_pipeline,
        )
        if request.HasField("pac")
        else None,
    )


def instruction_message(instruction: Instruction) -> pb.RoundInstruction:
    return pb.RoundInstruction(
        round=instruction.round,
        block=instruction.block,
        bandwidth_hz=instruction.bandwidth_hz,
        local_iterations=instruction.local_iterations,
        deadline_unix_s=instruction.deadline_unix_s,
        finished=instruction.finished,
        modelled_latency_s=instruction.modelled_latency_s,
        skip_head=instruction.skip_head,
        pipeline=_pipeline_message(instruction.pipeline),
    )


def _pipeline_message(task: PipelineTask | None) -> pb.PipelineTask | None:
    if task is None:
        return None
    return pb.PipelineTask(
        job=task.job,
        owner=task.owner,
        first_unit=task.first_unit,
        last_unit=task.last_unit,
        units=task.units,
        micro_batches=task.micro_batches,
        micro_batch_size=task.micro_batch_size,
        max_length=task.max_length,
        dtype=task.dtype,
        deadline_unix_s=task.deadline_unix_s,
    )


def upload_header(message: pb.UploadHeader) -> UploadHeader:
    return UploadHeader(
        session=message.session,
        round=message.round,
        block=message.block,
        compute_s=message.compute_s,
        train_loss=message.train_loss,
    )


def ack_message(ack: UploadAck) -> pb.UploadAck:
    return pb.UploadAck(
        round=ack.round,
        block=ack.block,
        received_bytes=ack.received_bytes,
        duplicate=ack.duplicate,
    )


async def _header(parts: AsyncIterator[Any], kind: str) -> Any:
    """An upload stream's first part, which must be its header (`kind` names it in errors)."""
    try:
        first = await parts.__anext__()
    except StopAsyncIteration:
        raise InvalidRequest("upload", "empty stream") from None
    if first.WhichOneof("part") != "header":
        raise InvalidRequest("upload", f"the stream must open with {kind}")
    return first.header


async def _read_chunks(
    parts: AsyncIterator[Any], assembler: TensorAssembler, kind: str, deadline: float
) -> None:
    """The rest of an upload stream into `assembler`, by `deadline` (a time.monotonic() value;
    asyncio.TimeoutError after it)."""

    async def read() -> None:
        async for part in parts:
            if part.WhichOneof("part") != "chunk":
                raise InvalidRequest("upload", f"only one {kind} per stream")
            assembler.feed(part.chunk)

    await asyncio.wait_for(read(), timeout=max(deadline - time.monotonic(), 0))


async def receive_upload(
    parts: AsyncIterator[pb.GradientPart], coordinator: Coordinator, peer: Peer = PLAINTEXT_PEER
) -> UploadAck:
    """Read one gradient upload: header, checks, then the bounded chunk stream."""
    header = upload_header(await _header(parts, "an UploadHeader"))
    plan = coordinator.open_upload(header, peer)
    if plan.duplicate:  # a retry of an upload already taken: acknowledged, nothing read
        return UploadAck(header.round, plan.block, plan.received_bytes, duplicate=True)
    started = time.perf_counter()
    assembler = TensorAssembler(plan.shapes, plan.max_bytes)
    failure: tuple[str, str] | None = BROKEN
    try:
        await _read_chunks(parts, assembler, "UploadHeader", plan.deadline)
        tensors = assembler.finish()
        ack = coordinator.finish_upload(
            plan, header, tensors, time.perf_counter() - started, assembler.total_bytes
        )
        failure = None
        return ack
    except asyncio.TimeoutError:
        failure = LATE
        raise late_upload(header) from None
    except TensorStreamError as error:
        refusal = stream_refusal(error, plan.block)
        failure = ("refused", f"refused: {refusal}")
        raise refusal from None
    except CoordinatorError as error:
        failure = ("refused", f"refused: {error}")
        raise
    finally:  # anything but acceptance ends the device's hold on the block
        if failure is not None:
            coordinator.abandon_upload(plan, header, *failure)


# How an upload that is not accepted ends, as (kind, reason) for the engine's records.
BROKEN = ("broken", "its upload stream broke")
LATE = ("late", "missed its deadline during the upload")


def late_upload(header: UploadHeader) -> DeadlinePassed:
    return DeadlinePassed(f"round {header.round}'s deadline passed during the upload")


def stream_refusal(error: TensorStreamError, block: int) -> CoordinatorError:
    """What a gradient stream that breaks a rule is answered with (the same on every port)."""
    if isinstance(error, StreamTooLarge):
        return TooLarge(f"gradient stream: {error} (what block {block} weighs)")
    return InvalidRequest("gradient stream", str(error))


async def receive_states(
    parts: AsyncIterator[pb.StatesPart], coordinator: Coordinator, peer: Peer = PLAINTEXT_PEER
) -> pb.StatesAck:
    """Read one pipeline states upload: header, checks, then the bounded chunk stream (held to
    exactly the stage's tensors), within the pipeline's deadline."""
    header = await _header(parts, "a StatesHeader")
    device_id, pipeline, shapes = coordinator.open_states_upload(
        header.session, header.job, header.micro_batch, peer
    )
    assembler = TensorAssembler(shapes, 4 * sum(math.prod(shape) for shape in shapes.values()))
    try:
        await _read_chunks(parts, assembler, "StatesHeader", pipeline.deadline)
        tensors = assembler.finish()
    except asyncio.TimeoutError:
        raise DeadlinePassed(f"pipeline {header.job}'s deadline passed during the upload") from None
    except StreamTooLarge as error:
        raise TooLarge(f"states stream: {error}") from None
    except TensorStreamError as error:
        raise InvalidRequest("states", str(error)) from None
    received = pipeline.accept(device_id, header.micro_batch, tensors)
    return pb.StatesAck(job=header.job, micro_batch=header.micro_batch, received_bytes=received)

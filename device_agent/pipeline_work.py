"""An agent's stage in a PAC+ pipeline (see PipelineTask in coordinator.proto).

The owner runs the first units on its own samples, those not cached yet, micro-batch by
micro-batch; it uploads its last state and the padding mask, and, one micro-batch behind,
downloads the helpers' states, joins them to its own and caches each sample's states trimmed
to its tokens. A helper downloads each micro-batch's input, runs its units and uploads their
states. Only the stage's own layers are loaded (ml.pipeline_stage), and freed afterwards.
"""

from __future__ import annotations

import gc
import logging
import time

import numpy as np
import torch

from lola_deft.device_agent.connection import CoordinatorConnection
from lola_deft.device_agent.pac_worker import SideNetworkWorker
from lola_deft.device_agent.worker import SetupError
from lola_deft.ml.pac_training import CachedStates
from lola_deft.ml.pipeline_stage import StageModel
from lola_deft.protos.deft.v1 import coordinator_pb2

log = logging.getLogger("deft.agent")


def padded_inputs(states: CachedStates, chunk: list[int], size: int) -> dict[str, torch.Tensor]:
    """The samples' encoded inputs, with zero rows (all padding) up to `size`."""
    data = states.data
    inputs = {key: value[0:0] for key, value in data.inputs.items()}
    if chunk:
        inputs = data.batch(np.asarray(chunk))
        inputs.pop("labels", None)
    rows = size - len(chunk)
    return {
        key: torch.cat([value, torch.zeros((rows, *value.shape[1:]), dtype=value.dtype)])
        for key, value in inputs.items()
        if key != "labels"
    }


def run_pipeline_task(
    task: coordinator_pb2.PipelineTask,
    worker: SideNetworkWorker,
    connection: CoordinatorConnection,
) -> int:
    """Run this device's stage; returns the samples cached (owner) or micro-batches relayed."""
    if worker.states is None:
        raise SetupError("a pipeline task before the training setup")
    if task.max_length != worker.max_length:
        raise SetupError(
            f"pipeline of {task.max_length} tokens, this agent encodes {worker.max_length}"
        )
    started = time.perf_counter()
    stage = StageModel(worker.config.model_dir, task.first_unit, task.last_unit, worker.device)
    try:
        done = (
            _owner(task, stage, worker, connection)
            if task.owner
            else _helper(task, stage, connection)
        )
    finally:
        del stage
        gc.collect()
    log.info(
        "%s: pipeline %s, units %d-%d%s: %d %s in %.1f s",
        worker.config.device_id,
        task.job,
        task.first_unit,
        task.last_unit,
        " (owner)" if task.owner else "",
        done,
        "samples cached" if task.owner else "micro-batches relayed",
        time.perf_counter() - started,
    )
    return done


def _owner(
    task: coordinator_pb2.PipelineTask,
    stage: StageModel,
    worker: SideNetworkWorker,
    connection: CoordinatorConnection,
) -> int:
    states = worker.states
    assert states is not None
    size = task.micro_batch_size
    missing = [i for i in range(len(states.data)) if i not in states.cache]
    chunks = [missing[start : start + size] for start in range(0, task.micro_batches * size, size)]
    helpers = task.last_unit < task.units - 1
    kept: dict[int, tuple[list[int], torch.Tensor]] = {}
    cached = 0

    def keep(chunk: list[int], full: torch.Tensor) -> int:
        for row, index in enumerate(chunk):
            states.cache.put(index, full[row, :, : int(states.lengths[index])].numpy())
        return len(chunk)

    def collect(micro_batch: int) -> int:
        chunk, own = kept.pop(micro_batch)
        back = connection.download_states(task.job, micro_batch, task.deadline_unix_s)["states"]
        return keep(chunk, torch.cat([own, torch.from_numpy(back).float()], dim=1))

    for micro_batch, chunk in enumerate(chunks):
        inputs = padded_inputs(states, chunk, size)
        own = stage.run(inputs)
        if not helpers:
            cached += keep(chunk, own)
            continue
        mask = inputs["attention_mask"].float().numpy()
        tensors = {"hidden": own[:, -1].numpy(), "mask": mask}
        connection.upload_states(task.job, micro_batch, tensors, task.deadline_unix_s)
        kept[micro_batch] = (chunk, own)
        if micro_batch >= 1:
            cached += collect(micro_batch - 1)
    for micro_batch in sorted(kept):
        cached += collect(micro_batch)
    worker.cache_updated()
    return cached


def _helper(
    task: coordinator_pb2.PipelineTask, stage: StageModel, connection: CoordinatorConnection
) -> int:
    for micro_batch in range(task.micro_batches):
        given = connection.download_states(task.job, micro_batch, task.deadline_unix_s)
        states = stage.run(
            {"hidden": torch.from_numpy(given["hidden"]), "mask": torch.from_numpy(given["mask"])}
        )
        connection.upload_states(
            task.job, micro_batch, {"states": states.numpy()}, task.deadline_unix_s
        )
    return task.micro_batches

"""PAC+'s plans as the coordinator asks the scheduler for them: which pipeline fills a device's
cache (PlanPipeline, from the devices' reports and the backbone's costs measured once on the
coordinator), and how a round's mini-batches are shared by speed (PlanShares).

Units are the embeddings (0) and the encoder's layers (1..L). The coordinator times each unit's
forward pass over one micro-batch and a side-network step over the same states: its reference.
A device's compute factor is its reported side-network step over the reference step (a device
that cannot hold the backbone has never run it, but it runs the side network every round; the
two scale alike on one processor). Its uplink is its spectral efficiency over an equal share of
the band, the rate the latency model gives it.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lola_deft.server.messages import Allocation, AllocationRequest, PipelineTask, ResourceReport
from lola_deft.server.pipeline import PipelineJob, StagePlan

STATE_BITS = 16  # states travel as float16


@dataclass(frozen=True)
class BackboneCosts:
    unit_seconds: tuple[float, ...]  # one micro-batch's forward, per unit, on the coordinator
    unit_bytes: tuple[float, ...]  # each unit's weights
    hidden_size: int
    reference_step_s: float  # a side-network step over one micro-batch, on the coordinator
    micro_batch_size: int
    max_length: int

    @property
    def units(self) -> int:
        return len(self.unit_seconds)

    def activation_bits(self) -> float:
        return float(self.micro_batch_size * self.max_length * self.hidden_size * STATE_BITS)

    def working_bytes(self) -> float:
        """A stage's memory beyond its weights: a micro-batch's states in and out, and a
        layer's intermediate activations (about four times the states), in float32."""
        states = self.micro_batch_size * self.max_length * self.hidden_size * 4
        return float(6 * states)


def median_seconds(action: Any, repeats: int = 3) -> float:
    """Median wall seconds of `action` over `repeats` runs, after one to warm up."""
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def measure_backbone(model_dir: Path, micro_batch_size: int, max_length: int) -> BackboneCosts:
    """The reference costs, on random tokens of the full length (a state's size does not depend
    on the words)."""
    import torch

    from lola_deft.ml.pac_training import task_loss
    from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters
    from lola_deft.ml.pipeline_stage import StageModel, additive_mask

    stage = StageModel(model_dir, 0, _last_unit(model_dir))
    model = stage.model
    config = model.config
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(
        0, int(config.vocab_size), (micro_batch_size, max_length), generator=generator
    )
    mask = torch.ones(micro_batch_size, max_length, dtype=torch.long)
    with torch.no_grad():
        embedded = model.embeddings(input_ids=ids)
        seconds = [median_seconds(lambda: model.embeddings(input_ids=ids))]
        extended = additive_mask(mask, embedded.dtype)
        for layer in model.encoder.layer:
            seconds.append(
                median_seconds(lambda layer=layer: layer(embedded, attention_mask=extended))
            )
    unit_bytes = [sum(p.numel() * p.element_size() for p in model.embeddings.parameters())]
    unit_bytes += [
        sum(p.numel() * p.element_size() for p in layer.parameters())
        for layer in model.encoder.layer
    ]
    states = stage.run({"input_ids": ids, "attention_mask": mask})
    hidden = int(config.hidden_size)
    adapters = ParallelAdapters(AdapterShape(hidden, len(model.encoder.layer), 2))
    labels = torch.zeros(micro_batch_size, dtype=torch.long)

    def step() -> None:
        adapters.zero_grad(set_to_none=True)
        task_loss(adapters(states, mask.bool()), labels).backward()

    return BackboneCosts(
        tuple(seconds),
        tuple(float(b) for b in unit_bytes),
        hidden,
        median_seconds(step),
        micro_batch_size,
        max_length,
    )


def _last_unit(model_dir: Path) -> int:
    from lola_deft.ml.pipeline_stage import backbone_units

    return backbone_units(model_dir) - 1


def pipeline_document(
    costs: BackboneCosts, reports: list[ResourceReport], owner: str, bandwidth_hz: float
) -> dict[str, Any]:
    """The scheduler's PlanPipeline instance over the reporting devices (owner among them)."""
    share = bandwidth_hz / max(len(reports), 1)
    devices = []
    for report in reports:
        step = report.pac.step_seconds if report.pac is not None else 0.0
        factor = step / costs.reference_step_s if step > 0 and costs.reference_step_s > 0 else 1.0
        efficiency = report.spectral_efficiency or 1.0
        devices.append(
            {
                "id": report.device_id,
                "memory_bytes": report.available_memory_bytes,
                "compute_factor": max(factor, 1e-3),
                "uplink_bps": max(efficiency * share, 1.0),
            }
        )
    return {
        "unit_seconds": list(costs.unit_seconds),
        "unit_bytes": list(costs.unit_bytes),
        "activation_bits": costs.activation_bits(),
        "working_bytes": costs.working_bytes(),
        "devices": devices,
        "owner": owner,
    }


def pipeline_job(
    plan: dict[str, Any], costs: BackboneCosts, samples: int, timeout_s: float
) -> tuple[PipelineJob, dict[str, PipelineTask]]:
    """The relay for a plan over `samples` of the owner's uncached samples, and each stage
    device's task."""
    stages = tuple(
        StagePlan(stage["device"], int(stage["first_unit"]), int(stage["last_unit"]))
        for stage in plan["stages"]
    )
    micro_batches = max(1, math.ceil(samples / costs.micro_batch_size))
    job = PipelineJob(
        job=secrets.token_hex(8),
        stages=stages,
        micro_batches=micro_batches,
        micro_batch_size=costs.micro_batch_size,
        max_length=costs.max_length,
        hidden_size=costs.hidden_size,
        deadline=time.monotonic() + timeout_s,
    )
    deadline_unix = time.time() + timeout_s
    tasks = {
        stage.device: PipelineTask(
            job=job.job,
            owner=index == 0,
            first_unit=stage.first_unit,
            last_unit=stage.last_unit,
            units=costs.units,
            micro_batches=micro_batches,
            micro_batch_size=costs.micro_batch_size,
            max_length=costs.max_length,
            dtype="float16",
            deadline_unix_s=deadline_unix,
        )
        for index, stage in enumerate(stages)
    }
    return job, tasks


def shares_document(
    request: AllocationRequest, allocation: Allocation, batch_size: int, iterations: int
) -> dict[str, Any]:
    """PlanShares over the slots' devices: `iterations` mini-batches per slot in all, each
    device's per-sample seconds from its report and its modelled upload as its fixed cost."""
    seconds = {device.id: device.block_seconds[0] for device in request.devices}
    total = iterations * batch_size * len(allocation.assignment)
    return {
        "total_samples": total,
        "devices": [
            {
                "id": entry.device,
                "seconds_per_sample": seconds[entry.device] / batch_size,
                "fixed_seconds": entry.upload_s,
                "samples": total,
            }
            for entry in allocation.assignment
        ],
    }


def shared_allocation(
    request: AllocationRequest, allocation: Allocation, plan: dict[str, Any], batch_size: int
) -> tuple[Allocation, dict[str, int]]:
    """Mini-batches per device from a PlanShares answer (at least one each), and the allocation
    with each device's modelled compute and the round's latency following them."""
    seconds = {device.id: device.block_seconds[0] for device in request.devices}
    iterations = {
        share["device"]: max(1, round(int(share["samples"]) / batch_size))
        for share in plan["shares"]
    }
    assignment = tuple(
        dataclasses.replace(
            entry,
            compute_s=(compute := iterations[entry.device] * seconds[entry.device]),
            latency_s=compute + entry.upload_s,
        )
        for entry in allocation.assignment
    )
    latency = max(entry.latency_s for entry in assignment)
    return dataclasses.replace(allocation, assignment=assignment, latency_s=latency), iterations

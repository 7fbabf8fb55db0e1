"""Where a finished round goes besides the engine: Prometheus gauges and history.json. Both read
the one typed RoundRecord."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lola_deft.server.messages import AllocationRequest, RoundRecord, RunHistory
from lola_deft.server.metrics import CoordinatorMetrics


def export_metrics(
    metrics: CoordinatorMetrics, record: RoundRecord, request: AllocationRequest
) -> None:
    m = metrics
    m.round.set(record.round)
    m.rounds.inc()
    m.round_latency.labels("measured").set(record.measured_wall_s)
    m.round_latency.labels("modelled").set(record.modelled_latency_s)
    m.round_wall.observe(record.measured_wall_s)
    by_device = {entry.device: entry for entry in record.assignment}
    for offer in request.devices:  # what the scheduler was told, device by device
        entry = by_device.get(offer.id)
        m.device_block.labels(offer.id).set(entry.block if entry else 0)
        m.device_bandwidth.labels(offer.id).set(entry.bandwidth_hz if entry else 0.0)
        m.device_modelled.labels(offer.id).set(entry.modelled_latency_s if entry else 0.0)
        m.device_memory.labels(offer.id).set(offer.memory_bytes)
        m.device_efficiency.labels(offer.id).set(offer.spectral_efficiency)
        m.device_compute.labels(offer.id).set((entry.compute_s or 0.0) if entry else 0.0)
        m.device_upload.labels(offer.id).set((entry.upload_s or 0.0) if entry else 0.0)
    if record.train_loss is not None:
        m.loss.set(record.train_loss)
    if record.allocator == "fallback":
        m.fallback_rounds.inc()
    for failure in record.refusals:
        m.failed_blocks.labels(failure.kind).inc()
    for moved in record.reassignments:
        m.reassignments.labels(moved.kind).inc()
    for clamp in record.clamped:
        m.clamped_claims.labels(clamp.device).inc()
    if record.rolled_back:
        m.rollbacks.inc()
    if record.eval is not None:
        m.eval_loss.set(record.eval.loss)
        for key, value in record.eval.scores.items():
            if key.endswith("_loss"):  # a further set's loss (MNLI's "mismatched_loss")
                m.eval_set_loss.labels(key.removesuffix("_loss")).set(value)
            else:
                m.eval_metric.labels(key).set(value)


def write_history(path: Path, document: dict[str, Any]) -> None:
    """history.json (RunHistory.to_dict()), atomically: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.replace(path)


def read_history(path: Path) -> RunHistory:
    return RunHistory.from_dict(json.loads(path.read_text()))

"""Evaluation of the coordinator's adapters on the task's dev split (and MNLI's mismatched)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lola_deft.ml.batching import EncodedSplit
from lola_deft.ml.glue import TaskSpec, compute_metrics
from lola_deft.ml.model import LoadedModel


def evaluate(
    loaded: LoadedModel, data: EncodedSplit, spec: TaskSpec, batch_size: int = 64
) -> dict[str, Any]:
    """Dev loss and the task's GLUE metrics; `metric` holds the headline one."""
    model = loaded.model
    model.eval()
    outputs, losses = [], []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.batch(np.arange(start, min(start + batch_size, len(data))))
            result = model(**batch)
            losses.append(float(result.loss) * len(batch["labels"]))
            outputs.append(result.logits.float().cpu().numpy())
    metrics = compute_metrics(spec, data.labels.numpy(), np.concatenate(outputs))
    metrics["loss"] = sum(losses) / len(data)
    metric_name = "score" if spec.is_regression else spec.metric
    metrics["metric"] = metrics[metric_name]
    return {**metrics, "metric_name": metric_name}


def evaluate_sets(
    loaded: LoadedModel, sets: Mapping[str, EncodedSplit], spec: TaskSpec
) -> dict[str, Any]:
    """`evaluate` on "dev" (the headline metric), plus every other set's numbers under its name:
    MNLI reports `accuracy` (matched) and `mismatched_accuracy`, `mismatched_loss`."""
    result = evaluate(loaded, sets["dev"], spec)
    for name, data in sets.items():
        if name == "dev":
            continue
        other = evaluate(loaded, data, spec)
        result |= {
            f"{name}_{key}": value
            for key, value in other.items()
            if key not in ("metric", "metric_name")
        }
    return result

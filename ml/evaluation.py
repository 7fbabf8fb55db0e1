"""Evaluation of the coordinator's adapters on the task's dev split (and MNLI's mismatched)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lola_deft.ml.batching import EncodedSplit
from lola_deft.ml.glue import TaskSpec, compute_metrics
from lola_deft.ml.model import LoadedModel


def scores(spec: TaskSpec, labels: np.ndarray, logits: np.ndarray, loss: float) -> dict[str, Any]:
    """The task's GLUE metrics, the loss, and `metric` / `metric_name`: the headline one."""
    metrics = compute_metrics(spec, labels, logits)
    metrics["loss"] = loss
    metric_name = "score" if spec.is_regression else spec.metric
    metrics["metric"] = metrics[metric_name]
    return {**metrics, "metric_name": metric_name}


def by_set(results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Each set's `scores` as one record: "dev" carries the headline metric, every other set
    its numbers under its name (MNLI: `mismatched_accuracy`, `mismatched_loss`)."""
    result = dict(results["dev"])
    for name, other in results.items():
        if name != "dev":
            result |= {
                f"{name}_{key}": value
                for key, value in other.items()
                if key not in ("metric", "metric_name")
            }
    return result


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
    return scores(spec, data.labels.numpy(), np.concatenate(outputs), sum(losses) / len(data))


def evaluate_sets(
    loaded: LoadedModel, sets: Mapping[str, EncodedSplit], spec: TaskSpec
) -> dict[str, Any]:
    """`evaluate` on every set, as `by_set` records them."""
    return by_set({name: evaluate(loaded, data, spec) for name, data in sets.items()})

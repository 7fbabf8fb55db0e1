"""Centralized LoRA fine-tuning of the same model and task in one process, for comparison.

Same budget as a DEFT run: `steps` Adam steps (one per DEFT round), each on `local_iterations`
mini-batches of `batch_size` (what one DEFT device computes per round), full backward through
every block. Evaluated on the same dev split with the same metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.evaluation import evaluate_sets
from lola_deft.ml.glue import read_dev_sets, read_split, task_spec
from lola_deft.ml.model import load_model
from lola_deft.ml.training import block_gradient
from lola_deft.server.settings import TrainingSettings
from lola_deft.server.training_state import TrainingState


@dataclass
class CentralizedConfig(TrainingSettings):
    steps: int = 20  # one Adam step per DEFT round


def train_centralized(
    config: CentralizedConfig, on_step: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    spec = task_spec(config.task)
    loaded = load_model(config.model_dir, spec.num_labels, config.lora, seed=config.seed)
    state = TrainingState(loaded, config.learning_rate)
    train = encode(
        loaded.tokenizer, read_split(config.data_dir, spec, "train"), config.max_seq_length
    )
    dev = {
        name: encode(loaded.tokenizer, split, config.max_seq_length)
        for name, split in read_dev_sets(config.data_dir, spec).items()
    }
    sampler = BatchSampler(train, config.batch_size, seed=config.seed)
    records = [{"step": 0, "eval": evaluate_sets(loaded, dev, spec)}]
    for step in range(1, config.steps + 1):
        started = time.perf_counter()
        result = block_gradient(loaded, None, sampler.take(config.local_iterations))
        state.apply({name: g.numpy() for name, g in result.gradients.items()})
        record: dict[str, Any] = {
            "step": step,
            "train_loss": result.loss,
            "seconds": time.perf_counter() - started,
        }
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
            record["eval"] = evaluate_sets(loaded, dev, spec)
        records.append(record)
        if on_step:
            on_step(record)
    return records


def final_metric(records: list[dict[str, Any]]) -> float:
    evaluated = [r for r in records if "eval" in r]
    return float(evaluated[-1]["eval"]["metric"]) if evaluated else float(np.nan)

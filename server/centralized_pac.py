"""PAC+ on one device: parallel adapters trained over cached backbone states, for comparison
with centralized LoRA (`deft centralized --method pac`).

The same budget as centralized LoRA: `steps` Adam steps, each on `local_iterations` mini-batches
of `batch_size`, and the same dev sets and metric. The backbone runs once per sample, the first
time a step draws it (so the first epoch's steps carry the cache fill, as PAC+'s first epoch
does), then never again: every later step is the adapters' alone. The dev sets' states are
cached at the first evaluation, which, as for LoRA, is not counted as training time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from lola_deft.ml.activation_cache import ActivationCache, CacheKey
from lola_deft.ml.batching import BatchSampler, EncodedSplit, encode
from lola_deft.ml.evaluation import by_set, scores
from lola_deft.ml.glue import TaskSpec, read_dev_sets, read_split, task_spec
from lola_deft.ml.model import content_digest
from lola_deft.ml.pac_training import CachedStates, adapter_gradient, task_loss
from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters, load_backbone
from lola_deft.server.centralized import CentralizedConfig
from lola_deft.server.settings import LEARNING_RATES

EVAL_BATCH = 64
# The side network diverges at LoRA's default 5e-3 on the embedded task; 1e-3 trains it
# steadily (measured: 0.97 accuracy after 200 steps of 2 x 16 samples).
PAC_LEARNING_RATE = LEARNING_RATES["pac"]


# States kept in memory per split, in the key's storage: a GLUE-size split (MNLI's 393k training
# samples, its 10k dev samples at roberta-base size) would not fit; beyond this budget samples
# run the backbone each time they are needed (said once in the log).
SPLIT_CACHE_BYTES = 4 * 2**30


def cached_split(
    backbone: torch.nn.Module,
    data: EncodedSplit,
    key: CacheKey,
    loader: Callable[[], torch.nn.Module] | None = None,
    budget_bytes: int = SPLIT_CACHE_BYTES,
) -> CachedStates:
    """States kept in memory as they are computed, up to `budget_bytes`."""
    cache = ActivationCache(key, None, budget_bytes, 0)
    return CachedStates(backbone, data, cache, loader=loader)


def evaluate_adapters(
    adapters: ParallelAdapters, sets: Mapping[str, CachedStates], spec: TaskSpec
) -> dict[str, Any]:
    """Dev loss and the task's metrics, recorded as LoRA's evaluation records them."""
    adapters.eval()
    device = next(adapters.parameters()).device
    results = {}
    for name, states in sets.items():
        logits, losses = [], []
        with torch.no_grad():
            for start in range(0, len(states.data), EVAL_BATCH):
                indices = list(range(start, min(start + EVAL_BATCH, len(states.data))))
                hidden, mask = states.batch(indices)
                output = adapters(hidden.to(device), mask.to(device)).float().cpu()
                labels = states.data.labels[start : start + len(indices)]
                losses.append(float(task_loss(output, labels)) * len(indices))
                logits.append(output.numpy())
        loss = sum(losses) / len(states.data)
        results[name] = scores(spec, states.data.labels.numpy(), np.concatenate(logits), loss)
    return by_set(results)


def train_centralized_pac(
    config: CentralizedConfig, on_step: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    spec = task_spec(config.task)
    torch.manual_seed(config.seed)
    backbone, hidden, layers = load_backbone(config.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(config.model_dir))
    digest = content_digest(config.model_dir)
    train = cached_split(
        backbone,
        encode(tokenizer, read_split(config.data_dir, spec, "train"), config.max_seq_length),
        CacheKey(digest, config.task, "train", config.max_seq_length, "float32"),
    )
    dev = {
        name: cached_split(
            backbone,
            encode(tokenizer, split, config.max_seq_length),
            CacheKey(digest, config.task, name, config.max_seq_length, "float32"),
        )
        for name, split in read_dev_sets(config.data_dir, spec).items()
    }
    adapters = ParallelAdapters(AdapterShape(hidden, layers, spec.num_labels))
    optimizer = torch.optim.Adam(adapters.parameters(), lr=config.learning_rate)
    sampler = BatchSampler(train.data, config.batch_size, seed=config.seed)
    records: list[dict[str, Any]] = [{"step": 0, "eval": evaluate_adapters(adapters, dev, spec)}]
    for step in range(1, config.steps + 1):
        started = time.perf_counter()
        batches = [sampler.next_indices().tolist() for _ in range(config.local_iterations)]
        result = adapter_gradient(adapters, train, batches)
        for name, parameter in adapters.named_parameters():
            parameter.grad = result.gradients[name]
        optimizer.step()
        record: dict[str, Any] = {
            "step": step,
            "train_loss": result.loss,
            "seconds": time.perf_counter() - started,
            "backbone_passes": train.cache.stats.misses,  # so far: samples seen the first time
        }
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
            record["eval"] = evaluate_adapters(adapters, dev, spec)
        records.append(record)
        if on_step:
            on_step(record)
    return records

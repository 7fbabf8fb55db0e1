"""Per-block cost of a model on this machine: seconds per iteration, saved activations and
gradient bytes per block depth, against a full LoRA backward pass (the paper's Fig. 4), and
the memory of one DEFT device against single-device LoRA fine-tuning (Fig. 4b). Used by
`make bench` and `deft reproduce`."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from lola_deft.device_agent.profiler import saved_tensor_bytes
from lola_deft.ml.model import HEAD, LoadedModel
from lola_deft.ml.training import block_gradient


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(
    loaded: LoadedModel, block: int | None, batch: dict[str, torch.Tensor], repeats: int
) -> float:
    block_gradient(loaded, block, [batch])  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        block_gradient(loaded, block, [batch])
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def block_costs(
    name: str, loaded: LoadedModel, batch: dict[str, torch.Tensor], repeats: int
) -> dict[str, Any]:
    weights = loaded.weight_bytes()
    lora = {n: p for n, p in loaded.model.named_parameters() if n in set(loaded.trainable_names())}
    rows = []
    for block in range(1, loaded.num_blocks + 1):
        log(f"  {name}: block {block}/{loaded.num_blocks}")
        names = loaded.blocks[block] + loaded.blocks[HEAD]
        rows.append(
            {
                "block": block,
                "seconds": timed(loaded, block, batch, repeats),
                "activation_bytes": saved_tensor_bytes(loaded, block, batch),
                "gradient_bytes": sum(lora[n].numel() * 4 for n in names),
            }
        )
    full = {
        "seconds": timed(loaded, None, batch, repeats),
        "activation_bytes": saved_tensor_bytes(loaded, None, batch),
        "gradient_bytes": sum(p.numel() * 4 for p in lora.values()),
    }
    # Single-device LoRA fine-tuning also holds Adam's two moments per tunable parameter.
    single_device = weights + full["activation_bytes"] + 3 * full["gradient_bytes"]
    deft_device = [weights + r["activation_bytes"] + r["gradient_bytes"] for r in rows]
    return {
        "model": name,
        "blocks": rows,
        "full": full,
        "weights_bytes": weights,
        "single_device_bytes": single_device,
        "deft_device_bytes": deft_device,
    }

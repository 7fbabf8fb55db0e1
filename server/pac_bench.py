"""Part 9 of `make bench`: PAC+ (parallel adapters over cached states) against LoRA, one device.

1. Cost per training iteration with a warm cache, against a full LoRA step and against
   LoLa-DEFT's shallowest block, and the cost of filling the cache (the backbone's forward
   with every hidden state kept), on all-MiniLM-L6-v2 and a random roberta-base-size encoder.
2. Memory of a PAC device once its cache is warm (adapters, their gradients, the saved
   activations of a step and the step's cached states: the backbone need not stay resident)
   against single-device LoRA (weights, activations, gradients and Adam's moments), and the
   cache's bytes per sample.
3. Metric after equal epochs (two passes over the training set, the same samples in the same
   steps) against centralized LoRA on the embedded synthetic sst2-mini, and early (after the
   demo's 20 steps, 0.4 of an epoch, where PAC is behind); the training time each needs to reach
   90% of LoRA's final metric (PAC's first steps include the backbone's pass over the samples
   they draw: the cache fill). PAC then goes on for as many steps again.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from lola_deft.device_agent.profiler import saved_bytes, saved_tensor_bytes
from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import EMBEDDED_TASK_DIR, read_split, task_spec
from lola_deft.ml.model import default_model_dir, load_model
from lola_deft.ml.pac_training import backbone_states, task_loss
from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters, load_backbone
from lola_deft.ml.random_encoder import make_random_encoder
from lola_deft.server.block_costs import log, timed
from lola_deft.server.pipeline_planning import median_seconds

MiB = 2**20


def pac_costs(name: str, model_dir: Path, batch_size: int, length: int, repeats: int) -> dict:
    spec = task_spec("sst2")
    split = read_split(EMBEDDED_TASK_DIR, spec, "train").subset(range(256))
    loaded = load_model(model_dir, spec.num_labels, dropout=0.0)
    data = encode(loaded.tokenizer, split, length)
    batch = BatchSampler(data, batch_size, seed=0).next_batch()
    log(f"  {name}: LoRA full step and shallowest block")
    lora_full = timed(loaded, None, batch, repeats)
    lora_shallowest = timed(loaded, 1, batch, repeats)
    lora_activations = saved_tensor_bytes(loaded, None, batch)
    lora_gradients = 4 * sum(
        p.numel() for n, p in loaded.model.named_parameters() if n in set(loaded.trainable_names())
    )
    single_device = loaded.weight_bytes() + lora_activations + 3 * lora_gradients
    del loaded

    log(f"  {name}: PAC cache fill and warm-cache step")
    backbone, hidden, layers = load_backbone(model_dir)
    fill = median_seconds(lambda: backbone_states(backbone, batch), repeats)
    states = backbone_states(backbone, batch)
    mask, labels = batch["attention_mask"].bool(), batch["labels"]
    adapters = ParallelAdapters(AdapterShape(hidden, layers, spec.num_labels))

    def step() -> None:
        adapters.zero_grad(set_to_none=True)
        task_loss(adapters(states, mask), labels).backward()

    warm = median_seconds(step, max(repeats, 5))
    saved = saved_bytes(step)
    parameters = 4 * sum(p.numel() for p in adapters.parameters())
    # Only a sample's real tokens are cached (float16 by default).
    tokens = float(batch["attention_mask"].sum()) / batch_size
    return {
        "model": name,
        "batch_size": batch_size,
        "sequence_length": length,
        "lora_full_s": lora_full,
        "lora_shallowest_s": lora_shallowest,
        "pac_fill_s": fill,
        "pac_step_s": warm,
        "single_device_bytes": single_device,
        "pac_device_bytes": 2 * parameters + saved + states.numel() * 4,
        "pac_cache_bytes_per_sample": (layers + 1) * tokens * hidden * 2,
        "adapter_parameters": parameters // 4,
    }


EARLY_STEPS = 20  # the demo's rounds: 0.4 of an epoch of sst2-mini at 2 x 16 samples a step


def pac_accuracy(epochs: int, evaluate_every: int = 5) -> dict[str, Any]:
    """Centralized LoRA and PAC on the same samples for `epochs` passes over the training set
    (the equal-epochs comparison), both evaluated every `evaluate_every` steps; PAC then goes on
    for as many steps again, and both are also read at EARLY_STEPS (where PAC is behind)."""
    from lola_deft.server.centralized import CentralizedConfig, train_centralized
    from lola_deft.server.centralized_pac import PAC_LEARNING_RATE, train_centralized_pac

    samples = len(read_split(EMBEDDED_TASK_DIR, task_spec("sst2"), "train").labels)
    per_step = 2 * 16  # the defaults: M = 2 mini-batches of 16
    steps = max(EARLY_STEPS, -(-epochs * samples // per_step))
    steps -= steps % evaluate_every

    def config(rate: float, count: int) -> CentralizedConfig:
        return CentralizedConfig(
            default_model_dir(),
            EMBEDDED_TASK_DIR,
            steps=count,
            learning_rate=rate,
            max_seq_length=32,
            eval_every=evaluate_every,
        )

    log(f"  centralized LoRA, {steps} steps ({epochs} epochs)")
    lora = train_centralized(config(5e-3, steps))
    log(f"  centralized PAC, {2 * steps} steps")
    pac = train_centralized_pac(config(PAC_LEARNING_RATE, 2 * steps))
    lora_final = float(lora[-1]["eval"]["metric"])
    target = 0.9 * lora_final
    return {
        "epochs": epochs,
        "steps": steps,
        "early_steps": EARLY_STEPS,
        "lora_metric": lora_final,
        "pac_metric_equal_steps": float(pac[steps]["eval"]["metric"]),
        "pac_metric_2x_steps": float(pac[-1]["eval"]["metric"]),
        "lora_metric_early": float(lora[EARLY_STEPS]["eval"]["metric"]),
        "pac_metric_early": float(pac[EARLY_STEPS]["eval"]["metric"]),
        "lora_seconds_to_90": reached(lora, target)[0],
        "pac_seconds_to_90": reached(pac, target)[0],
        "pac_first_epoch_seconds_per_step": statistics.median(r["seconds"] for r in pac[1:6]),
        "lora_seconds_per_step": statistics.median(r["seconds"] for r in lora[1:]),
        "pac_seconds_per_step": statistics.median(r["seconds"] for r in pac[1:]),
    }


def reached(records: list[dict[str, Any]], target: float) -> tuple[float | None, int | None]:
    """Training seconds until the first evaluation at or above `target`, and its step; (None,
    None) when none reaches it."""
    elapsed = 0.0
    for record in records[1:]:
        elapsed += record["seconds"]
        if "eval" in record and record["eval"]["metric"] >= target:
            return elapsed, int(record["step"])
    return None, None


def bench_pac(quick: bool, out: Path) -> dict[str, Any]:
    from lola_deft.server.pac_fleet_bench import bench_fleet

    with tempfile.TemporaryDirectory() as folder:
        models = [("all-MiniLM-L6-v2", default_model_dir(), 16, 48)]
        if not quick:
            base = make_random_encoder(Path(folder) / "base", "base")
            models.append(("random roberta-base-size", base, 8, 128))
        costs = [pac_costs(n, p, b, t, 1 if quick else 3) for n, p, b, t in models]
    accuracy = pac_accuracy(1 if quick else 2)
    with tempfile.TemporaryDirectory(dir=out) as folder:  # fresh: PAC's caches start cold
        fleet = bench_fleet(Path(folder), quick)
    return {"costs": costs, "accuracy": accuracy, "fleet": fleet}


def print_pac(result: dict[str, Any]) -> None:
    for c in result["costs"]:
        print(
            f"\n(9) PAC+ on {c['model']}, batch {c['batch_size']} x {c['sequence_length']}: "
            f"warm-cache step {1e3 * c['pac_step_s']:.1f} ms = "
            f"{c['pac_step_s'] / c['lora_full_s']:.3f}x a full LoRA step "
            f"({1e3 * c['lora_full_s']:.0f} ms), {c['pac_step_s'] / c['lora_shallowest_s']:.3f}x "
            f"LoLa-DEFT's shallowest block; cache fill {1e3 * c['pac_fill_s']:.0f} ms per batch "
            f"(once); device memory {c['pac_device_bytes'] / MiB:.1f} MiB against single-device "
            f"LoRA {c['single_device_bytes'] / MiB:.0f} MiB "
            f"({c['pac_device_bytes'] / c['single_device_bytes']:.3f}x); cache "
            f"{c['pac_cache_bytes_per_sample'] / 1024:.0f} KiB per sample in float16; "
            f"{c['adapter_parameters']} adapter parameters"
        )
    a = result["accuracy"]

    def when(seconds: float | None) -> str:
        return "never" if seconds is None else f"{seconds:.1f} s"

    print(
        f"(9) PAC+ vs LoRA, one device, synthetic sst2-mini, {a['epochs']} epochs "
        f"({a['steps']} steps of the same samples): LoRA {a['lora_metric']:.4f}, PAC "
        f"{a['pac_metric_equal_steps']:.4f} ({a['pac_metric_equal_steps'] / a['lora_metric']:.3f}x)"
        f"; PAC after {2 * a['steps']} steps {a['pac_metric_2x_steps']:.4f}. Early, after "
        f"{a['early_steps']} steps: LoRA {a['lora_metric_early']:.4f}, PAC "
        f"{a['pac_metric_early']:.4f}. Seconds per step: LoRA {a['lora_seconds_per_step']:.3f}, "
        f"PAC {a['pac_seconds_per_step']:.3f} (its first steps, filling the cache: "
        f"{a['pac_first_epoch_seconds_per_step']:.3f}). Training time to 90% of LoRA's metric: "
        f"LoRA {when(a['lora_seconds_to_90'])}, PAC {when(a['pac_seconds_to_90'])}"
    )
    if "fleet" in result:
        from lola_deft.server.pac_fleet_bench import format_fleet

        print(format_fleet(result["fleet"]))


def pac_targets(result: dict[str, Any]) -> list[str]:
    lines = []
    for c in result["costs"]:
        step = c["pac_step_s"] / c["lora_full_s"]
        memory = c["pac_device_bytes"] / c["single_device_bytes"]
        lines += [
            f"{'PASS' if step <= 0.1 else 'FAIL'} {c['model']}: PAC warm-cache step "
            f"{step:.3f}x a full LoRA step (target <= 0.1)",
            f"{'PASS' if memory <= 0.3 else 'FAIL'} {c['model']}: PAC device memory "
            f"{memory:.3f}x single-device LoRA (target <= 0.3)",
        ]
    a = result["accuracy"]
    ratio = a["pac_metric_equal_steps"] / a["lora_metric"]
    lines.append(
        f"{'PASS' if ratio >= 0.97 else 'FAIL'} PAC reaches {ratio:.3f}x centralized LoRA's "
        f"metric after {a.get('epochs', '?')} equal epochs (target >= 0.97; synthetic sst2-mini)"
    )
    return lines

"""`deft centralized --method pac`: parallel adapters trained over cached states, in process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.server.centralized import CentralizedConfig, final_metric
from lola_deft.server.centralized_pac import train_centralized_pac
from tests.helpers import run_deft


def test_steps_train_the_adapters_and_report_like_lora(tiny_model_dir: Path) -> None:
    config = CentralizedConfig(
        model_dir=tiny_model_dir,
        data_dir=EMBEDDED_TASK_DIR,
        steps=3,
        local_iterations=2,
        learning_rate=1e-3,
    )
    seen = []
    records = train_centralized_pac(config, on_step=seen.append)
    assert [r["step"] for r in records] == [0, 1, 2, 3] and seen == records[1:]
    # 3 steps x 2 mini-batches of 16 distinct samples at most: each through the backbone once.
    assert 0 < records[-1]["backbone_passes"] <= 3 * 2 * 16
    assert all(np.isfinite(r["train_loss"]) for r in records[1:])
    assert {"metric", "metric_name", "loss", "accuracy"} <= set(records[-1]["eval"])
    assert 0.0 <= final_metric(records) <= 1.0


def test_the_cli_runs_pac_and_records_the_method(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pac.json"
    result = run_deft(
        "centralized",
        "--method",
        "pac",
        "--model",
        str(tiny_model_dir),
        "--steps",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "PAC+: learning rate 0.001" in result.stdout
    assert "never backward" in result.stdout
    document = json.loads(out.read_text())
    assert document["method"] == "pac" and len(document["steps"]) == 3


def test_a_split_over_its_budget_keeps_the_backbone_and_evaluates_the_same(
    tiny_model_dir: Path,
) -> None:
    """A dev set too large to cache (MNLI's, at roberta-base size) is recomputed instead: the
    same evaluation, and the backbone is never released."""
    from transformers import AutoTokenizer

    from lola_deft.ml.activation_cache import CacheKey
    from lola_deft.ml.batching import encode
    from lola_deft.ml.glue import read_split, task_spec
    from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters, load_backbone
    from lola_deft.server.centralized_pac import cached_split, evaluate_adapters

    spec = task_spec("sst2")
    backbone, hidden, layers = load_backbone(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = encode(tokenizer, read_split(EMBEDDED_TASK_DIR, spec, "dev").subset(range(40)), 16)
    key = CacheKey("m", "sst2", "dev", 16, "float32")
    loader = lambda: backbone  # noqa: E731
    roomy = cached_split(backbone, data, key, loader=loader)
    starved = cached_split(backbone, data, key, loader=loader, budget_bytes=0)
    adapters = ParallelAdapters(AdapterShape(hidden, layers, 2))
    first = evaluate_adapters(adapters, {"dev": roomy}, spec)
    second = evaluate_adapters(adapters, {"dev": starved}, spec)
    assert first["loss"] == second["loss"] and first["metric"] == second["metric"]
    assert roomy.release_backbone() and roomy.backbone is None
    assert not starved.release_backbone() and starved.backbone is backbone
    assert starved.cache.stats.memory_samples == 0

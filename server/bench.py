"""System benchmark (`make bench`, after the scheduler part).

1. Per-block seconds per iteration and memory for all-MiniLM-L6-v2 and a random roberta-base-size
   encoder (the paper's Fig. 4a), against a full LoRA backward pass.
2. Per-device memory of DEFT versus single-device LoRA fine-tuning (Fig. 4b).
3. Weights and gradients over the data port and over gRPC (plaintext and mutual TLS) versus a
   raw loopback TCP socket (stream_bench.py).
4. Coordinator overhead per round with 20 agents (instant fake agents: no compute).
5. DEFT (`deft demo`) versus centralized metric at equal steps on the embedded task.
6. The emulated wireless testbed (root only): measured versus modelled upload times.
7. Load: 500 fake agents for 60 s against a real coordinator and scheduler (load_bench.py).
8. Faults: an agent SIGKILLed mid-round and the scheduler SIGKILLed (fault_bench.py).
9. PAC+ against LoRA on one device: step time, memory, metric at equal steps (pac_bench.py).
Targets are checked at the end (PASS/FAIL); results go to bench-results/system.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import EMBEDDED_TASK_DIR, read_split, task_spec
from lola_deft.ml.model import default_model_dir, load_model, model_fingerprint
from lola_deft.ml.random_encoder import make_random_encoder
from lola_deft.protos.deft.v1 import coordinator_pb2_grpc
from lola_deft.protos.grpc_options import message_size_options
from lola_deft.server.block_costs import block_costs
from lola_deft.server.stream_bench import bench_streaming, print_streaming, streaming_targets

MiB = 2**20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- 1 and 2: per-block costs and memory ------------------------------------------------------
def bench_blocks(quick: bool) -> list[dict[str, Any]]:
    results = []
    spec = task_spec("sst2")
    split = read_split(EMBEDDED_TASK_DIR, spec, "train").subset(range(256))
    with tempfile.TemporaryDirectory() as folder:
        models = [("all-MiniLM-L6-v2", default_model_dir(), 16, 48)]
        if not quick:
            base = make_random_encoder(Path(folder) / "base", "base")
            models.append(("random roberta-base-size", base, 8, 128))
        for name, path, batch_size, length in models:
            loaded = load_model(path, 2, dropout=0.0)
            data = encode(loaded.tokenizer, split, length)
            batch = BatchSampler(data, batch_size, seed=0).next_batch()
            result = block_costs(name, loaded, batch, repeats=1 if quick else 3)
            result |= {"batch_size": batch_size, "sequence_length": length}
            results.append(result)
    return results


def print_blocks(results: list[dict[str, Any]]) -> None:
    for result in results:
        print(
            f"\n(1) {result['model']}, batch {result['batch_size']} x {result['sequence_length']}"
            f" tokens: per-block cost (block 1 = last layer, shortest backward)"
        )
        print(
            f"{'block':>6s} {'s/iteration':>12s} {'x full':>7s} {'activations MiB':>16s} "
            f"{'x full':>7s}"
        )
        full = result["full"]
        for row in result["blocks"]:
            print(
                f"{row['block']:6d} {row['seconds']:12.3f} {row['seconds'] / full['seconds']:7.2f} "
                f"{row['activation_bytes'] / MiB:16.1f} "
                f"{row['activation_bytes'] / full['activation_bytes']:7.2f}"
            )
        print(
            f"{'full':>6s} {full['seconds']:12.3f} {1:7.2f} {full['activation_bytes'] / MiB:16.1f}"
            f" {1:7.2f}"
        )
        deft = result["deft_device_bytes"]
        print(
            f"(2) per-device memory: single-device LoRA {result['single_device_bytes'] / MiB:.0f} "
            f"MiB; DEFT device {deft[0] / MiB:.0f} MiB (block 1) .. {deft[-1] / MiB:.0f} MiB "
            f"(block {len(deft)}), weights {result['weights_bytes'] / MiB:.0f} MiB"
        )


# -- 4: coordinator overhead ------------------------------------------------------------------
def bench_coordinator(num_agents: int, rounds: int, layers: int) -> dict[str, Any]:
    from lola_deft.server.allocator import InProcessAllocator
    from lola_deft.server.config import CoordinatorConfig
    from lola_deft.server.fake_agent import BlockLayout, CallLog, FakeAgent
    from lola_deft.server.service import start_coordinator

    with tempfile.TemporaryDirectory() as folder:
        model_dir = make_random_encoder(Path(folder) / "model", "tiny", layers=layers)
        config = CoordinatorConfig(
            model_dir=model_dir,
            data_dir=EMBEDDED_TASK_DIR,
            rounds=rounds + 1,
            eval_every=0,
            report_wait_s=5.0,
            round_timeout_s=60,
            checkpoint_dir=Path(folder) / "ck",
            liveness_timeout_s=60,
        )
        finished_at: list[float] = []
        running = start_coordinator(
            config,
            host="127.0.0.1",
            port=0,
            on_round=lambda record: finished_at.append(time.perf_counter()),
            allocator=InProcessAllocator(),
        )
        layout = BlockLayout(running.trainer.block_names, running.trainer.head_names)
        fingerprint = model_fingerprint(model_dir)

        async def fleet() -> None:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{running.port}", options=message_size_options()
            ) as channel:
                stub = coordinator_pb2_grpc.CoordinatorStub(channel)
                calls = CallLog()
                agents = [
                    FakeAgent(stub, f"fake-{i}", fingerprint, layout, calls, efficiency=0.5 + i)
                    for i in range(num_agents)
                ]
                await asyncio.gather(*(agent.run() for agent in agents))

        asyncio.run(fleet())
        running.engine.finished.wait(600)
        history = running.engine.history.rounds
        running.stop(grace=None)
    cycles = np.diff(finished_at)  # round 1 includes registration: skip it
    measured = history[1:]
    phases = {
        name: 1e3 * float(np.median([r.coordinator_s[name] for r in measured]))
        for name in ("schedule", "dispatch", "apply", "checkpoint")
    }
    return {
        "agents": num_agents,
        "blocks": layers,
        "rounds": len(cycles),
        "cycle_ms": 1e3 * float(np.median(cycles)),
        "transfer_ms": 1e3 * float(np.median([r.measured_wall_s for r in measured])),
        "solve_ms": 1e3 * float(np.median([r.solve_seconds for r in measured])),
        "phases_ms": phases,
        "overhead_ms": sum(phases.values()),
    }


# -- 5: DEFT vs centralized ---------------------------------------------------------------------
def bench_accuracy(rounds: int, out: Path) -> dict[str, Any]:
    from lola_deft.server.centralized import CentralizedConfig, final_metric, train_centralized
    from lola_deft.server.compute_model import compute_errors, settled_error
    from lola_deft.server.demo_runner import run_demo
    from lola_deft.server.export import read_history

    flags = ("--rounds", str(rounds), "--eval-every", str(rounds))
    log(f"  deft demo, {rounds} rounds")
    summary, demo_seconds = run_demo(out / "demo", *flags)
    log(f"  deft demo, {rounds} rounds, bfloat16 uploads")
    half, _ = run_demo(out / "demo-bfloat16", *flags, "--upload-dtype", "bfloat16")
    log(f"  centralized, {rounds} steps")
    torch.set_num_threads(2)
    records = train_centralized(
        CentralizedConfig(
            default_model_dir(),
            EMBEDDED_TASK_DIR,
            steps=rounds,
            learning_rate=5e-3,
            max_seq_length=32,
            eval_every=rounds,
        )
    )
    central = final_metric(records)
    history = read_history(Path(summary["history"]))
    return {
        "compute_error_per_round": [
            {"round": e.round, "median": e.median, "devices": e.devices}
            for e in compute_errors(history.rounds)
        ],
        "compute_error_after_5": settled_error(history.rounds, after=5),
        "bfloat16_metric": half["metric_after"],
        "rounds": rounds,
        "deft_metric": summary["metric_after"],
        "deft_before": summary["metric_before"],
        "centralized_metric": central,
        "ratio": summary["metric_after"] / central,
        "deft_wall_s": demo_seconds,
    }


PARTS = ("blocks", "streaming", "coordinator", "load", "faults", "accuracy", "testbed", "pac")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--quick", action="store_true", help="MiniLM only, small runs, no (5)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}; choose from {PARTS}")
    if args.quick:
        parts.discard("accuracy")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    if "blocks" in parts:
        log("(1, 2) per-block costs")
        results["blocks"] = bench_blocks(args.quick)
        print_blocks(results["blocks"])
    if "streaming" in parts:
        log("(3) gradient streaming")
        results["streaming"] = bench_streaming(
            (8 if args.quick else 64) * MiB, 2 if args.quick else 5
        )
        print_streaming(results["streaming"])
    if "coordinator" in parts:
        log("(4) coordinator overhead")
        results["coordinator"] = bench_coordinator(20, 3 if args.quick else 10, 12)
        c = results["coordinator"]
        phases = ", ".join(f"{k} {v:.1f}" for k, v in c["phases_ms"].items())
        print(
            f"\n(4) coordinator with {c['agents']} instant agents, {c['blocks']} blocks: "
            f"overhead {c['overhead_ms']:.1f} ms per round ({phases} ms; scheduler solve "
            f"{c['solve_ms']:.2f} ms); whole cycle {c['cycle_ms']:.1f} ms including weight "
            f"downloads, uploads and report collection ({c['transfer_ms']:.1f} ms from dispatch "
            f"to last upload)"
        )
    if "load" in parts:
        from lola_deft.server.load_bench import bench_load, format_load

        log("(7) load: fake agents against a real coordinator")
        results["load"] = bench_load(100 if args.quick else 500, 15 if args.quick else 60)
        print("\n" + format_load(results["load"]))
    if "faults" in parts:
        from lola_deft.server.fault_bench import bench_faults, format_faults

        log("(8) faults: a killed agent, a killed scheduler")
        results["faults"] = bench_faults()
        print("\n" + format_faults(results["faults"]))
    if "accuracy" in parts:
        log("(5) DEFT vs centralized")
        results["accuracy"] = bench_accuracy(20, args.out)
        a = results["accuracy"]
        print(
            f"\n(5) after {a['rounds']} rounds/steps: DEFT {a['deft_metric']:.4f} (from "
            f"{a['deft_before']:.4f}), centralized {a['centralized_metric']:.4f}: "
            f"{100 * a['ratio']:.1f}% (demo wall time {a['deft_wall_s']:.0f} s; synthetic "
            "sst2-mini data)"
        )
        print(
            f"    bfloat16 gradient uploads (half the payload S): DEFT {a['bfloat16_metric']:.4f}"
            f" against {a['deft_metric']:.4f} in float32"
        )
        print(
            "    modelled vs measured compute, median |error| per round: "
            + " ".join(f"{100 * e['median']:.0f}%" for e in a["compute_error_per_round"])
        )
    if "testbed" in parts:
        log("(6) emulated wireless testbed")
        results["testbed"] = bench_testbed(args.quick)
        if "rows" in results["testbed"]:
            from lola_deft.server.testbed.runner import format_report

            print("\n(6) testbed: upload time on tc-shaped links vs the scheduler's model")
            print(format_report(results["testbed"]))
        else:
            print(f"\n(6) testbed skipped: {results['testbed']['skipped']}")
    if "pac" in parts:
        from lola_deft.server.pac_bench import bench_pac, print_pac

        log("(9) PAC+ against LoRA")
        results["pac"] = bench_pac(args.quick, args.out)
        print_pac(results["pac"])
    verdicts = targets(results)
    print("\ntargets:")
    for line in verdicts:
        print("  " + line)
    results["targets"] = verdicts
    (args.out / f"system-{'-'.join(p for p in PARTS if p in parts)}.json").write_text(
        json.dumps(results, indent=2)
    )
    return 0


def bench_testbed(quick: bool) -> dict[str, Any]:
    from lola_deft.server.testbed.netns import TestbedUnavailable, check_available
    from lola_deft.server.testbed.runner import TestbedConfig, run_testbed

    try:
        check_available()
    except TestbedUnavailable as error:
        return {"skipped": str(error)}
    config = TestbedConfig(agents=3 if quick else 6, rounds=2 if quick else 5, prefix="dbench")
    return run_testbed(config, log=log)


def targets(results: dict[str, Any]) -> list[str]:
    lines = []
    for result in results.get("blocks", []):
        first, full = result["blocks"][0], result["full"]
        time_ratio = first["seconds"] / full["seconds"]
        memory_ratio = first["activation_bytes"] / full["activation_bytes"]
        lines.append(
            f"{'PASS' if time_ratio <= 0.6 else 'FAIL'} {result['model']}: shallowest "
            f"block {time_ratio:.2f}x the time of a full LoRA backward (target <= 0.6)"
        )
        lines.append(
            f"{'PASS' if memory_ratio <= 1 / 3 else 'FAIL'} {result['model']}: shallowest"
            f" block {memory_ratio:.2f}x the activation memory (target <= 0.33)"
        )
    if "coordinator" in results:
        overhead = results["coordinator"]["overhead_ms"]
        lines.append(
            f"{'PASS' if overhead < 50 else 'FAIL'} coordinator overhead {overhead:.1f} ms "
            f"per round with 20 agents (target < 50 ms)"
        )
    if "load" in results:
        from lola_deft.server.load_bench import load_targets

        lines.extend(load_targets(results["load"]))
    if "faults" in results:
        from lola_deft.server.fault_bench import fault_targets

        lines.extend(fault_targets(results["faults"]))
    if "streaming" in results:
        lines.extend(streaming_targets(results["streaming"]))
    if "rows" in results.get("testbed", {}):
        error = results["testbed"]["median_abs_error"]
        lines.append(
            f"{'PASS' if error <= 0.2 else 'FAIL'} testbed upload time within "
            f"{100 * error:.1f}% of the modelled S/(B_k r_k) (median; target <= 20%)"
        )
    if "accuracy" in results:
        ratio = results["accuracy"]["ratio"]
        lines.append(
            f"{'PASS' if ratio >= 0.9 else 'FAIL'} DEFT reaches {100 * ratio:.1f}% of "
            f"the centralized metric (target >= 90%)"
        )
        error = results["accuracy"].get("compute_error_after_5")
        if error is not None:
            lines.append(
                f"{'PASS' if error <= 0.15 else 'FAIL'} modelled compute within "
                f"{100 * error:.1f}% of the measured one after 5 demo rounds (median "
                "|modelled - measured| / measured per device-round; target <= 15%)"
            )
    if "pac" in results:
        from lola_deft.server.pac_bench import pac_targets

        lines.extend(pac_targets(results["pac"]))
    return lines


if __name__ == "__main__":
    sys.exit(main())

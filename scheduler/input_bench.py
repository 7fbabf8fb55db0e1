"""The scheduler's input path at scale: a whole Allocate round trip to a running service, and
`deft schedule` on the same instance as JSON, at K=10,000 devices and L=48 blocks, each device
with its own measured block_seconds (as the coordinator sends them)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lola_deft.protos.deft.v1 import scheduler_pb2_grpc
from lola_deft.protos.grpc_options import message_size_options
from lola_deft.scheduler.convert import request_from_instance_doc
from lola_deft.scheduler.service import start_scheduler
from lola_deft.scheduler.synthetic import PaperSetting, paper_round

TARGETS_MS = {"ba": 150.0, "jbba": 250.0}


def measured_instance(devices: int, blocks: int, seed: int = 0) -> dict[str, Any]:
    """A paper round where every device reports its own per-block seconds."""
    rng = np.random.default_rng(seed)
    doc = paper_round(PaperSetting(num_devices=devices, num_blocks=blocks), rng)
    reference = np.array(doc.pop("block_seconds"))
    for device in doc["devices"]:
        factor = device.pop("compute_factor")
        device["block_seconds"] = (reference / factor).tolist()
    return doc


def bench_input_path(devices: int = 10_000, blocks: int = 48, repeats: int = 5) -> dict[str, Any]:
    import grpc

    doc = measured_instance(devices, blocks)
    results: dict[str, Any] = {"devices": devices, "blocks": blocks, "round_trip_ms": {}}
    running = start_scheduler("127.0.0.1", 0)
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{running.port}", options=message_size_options()
        ) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            for policy in TARGETS_MS:
                request = request_from_instance_doc(doc, policy)
                stub.Allocate(request, timeout=60)  # warm-up
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    stub.Allocate(request, timeout=60)
                    times.append(time.perf_counter() - started)
                results["round_trip_ms"][policy] = 1e3 * statistics.median(times)
    finally:
        running.stop(grace=None)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "round.json"
        path.write_text(json.dumps(doc))
        results["cli_ms"] = {}
        for policy in TARGETS_MS:
            command = [sys.executable, "-m", "lola_deft.cli.main", "schedule", "--policy", policy]
            subprocess.run([*command, str(path)], check=True, capture_output=True)  # warm-up
            startup = _seconds([sys.executable, "-m", "lola_deft.cli.main", "--version"])
            total = _seconds([*command, str(path)])
            results["cli_ms"][policy] = 1e3 * total
            results.setdefault("cli_startup_ms", 1e3 * startup)
    results["scipy_import_ms"] = scipy_import_ms()
    return results


def _seconds(command: list[str], repeats: int = 3) -> float:
    """Median wall time of a whole command."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def scipy_import_ms() -> float:
    """What importing scipy.optimize (jbba's assignment solver) alone costs a fresh process."""
    bare = _seconds([sys.executable, "-c", "import numpy"])
    return 1e3 * (_seconds([sys.executable, "-c", "import numpy, scipy.optimize"]) - bare)


def print_input_path(result: dict[str, Any]) -> None:
    print(
        f"\n(c) input path at K={result['devices']}, L={result['blocks']} (every device with "
        "its own block_seconds):"
    )
    for policy, ms in result["round_trip_ms"].items():
        cli = result["cli_ms"][policy]
        print(
            f"    {policy:5s} Allocate round trip {ms:7.1f} ms   deft schedule {cli:7.1f} ms "
            f"(of which {result['cli_startup_ms']:.0f} ms interpreter start-up)"
        )
    print(
        f"    (a fresh process importing scipy.optimize, which jbba's solver needs: "
        f"{result['scipy_import_ms']:.0f} ms)"
    )


def input_path_targets(result: dict[str, Any]) -> list[str]:
    lines = []
    for policy, target in TARGETS_MS.items():
        ms = result["round_trip_ms"][policy]
        cli = result["cli_ms"][policy] - result["cli_startup_ms"]
        lines.append(
            f"{'PASS' if ms < target else 'FAIL'} Allocate round trip {policy} {ms:.0f} ms at "
            f"K={result['devices']}, L={result['blocks']} (target < {target:.0f} ms)"
        )
        lines.append(
            f"{'PASS' if cli <= 2 * ms else 'FAIL'} deft schedule {policy} {cli:.0f} ms after "
            f"start-up, {cli / ms:.1f}x the round trip (target <= 2x)"
        )
    return lines

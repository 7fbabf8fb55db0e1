"""Load benchmark: N fake agents (register, heartbeat every 2 s, report, wait out the compute
time they reported for their block, upload a small valid gradient) against a real coordinator
and scheduler, separate processes on loopback.

Every link is mutual TLS, as deployed: each fake agent has its own device certificate, so the
500 registrations are 500 handshakes and the enrolment gate runs on every call (`--insecure`
measures plaintext instead). Prints per-RPC latency (p50/p99), failed calls by status, reports
received per round against the fleet size, and the coordinator's resident memory and CPU. Run
it alone: `python -m lola_deft.server.load_bench --agents 500 --seconds 60`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from lola_deft.ml.model import load_model, model_fingerprint
from lola_deft.ml.random_encoder import make_random_encoder
from lola_deft.protos.credentials import PLAINTEXT, TlsFiles, open_channel
from lola_deft.protos.deft.v1 import coordinator_pb2 as pb
from lola_deft.protos.deft.v1 import coordinator_pb2_grpc
from lola_deft.protos.grpc_options import message_size_options
from lola_deft.server.cluster import Cluster
from lola_deft.server.export import read_history
from lola_deft.server.fake_agent import BlockLayout, CallLog, FakeAgent
from lola_deft.server.pki import init_folder

MiB = 2**20
LAYERS = 4
RPCS = ("Register", "SendHeartbeat", "DownloadWeights", "UploadGradient")
PROBE_INTERVAL_S = 0.05


def layout_of(model_dir: Path) -> BlockLayout:
    loaded = load_model(model_dir, num_labels=2)
    return BlockLayout(
        {b: names for b, names in loaded.blocks.items() if b != 0}, list(loaded.blocks[0])
    )


def device_tls(certs: Path | None, device_id: str) -> TlsFiles:
    if certs is None:
        return PLAINTEXT
    cert = certs / "devices" / f"{device_id}.pem"
    return TlsFiles(cert, cert.with_suffix(".key"), certs / "ca.pem")


def aio_channel(address: str, tls: TlsFiles, options: list[tuple[str, int]]) -> grpc.aio.Channel:
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)


def probe_heartbeats(
    address: str, fingerprint: str, seconds: float, interval: float, certs: Path | None
) -> list[float]:
    """A device of its own (run in a separate process): registers, then sends heartbeats every
    `interval` seconds; returns their latencies. Unlike the fleet's own numbers, these are not
    inflated by hundreds of fake agents queueing on one client event loop."""
    with open_channel(address, device_tls(certs, "probe")) as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        session = stub.Register(
            pb.RegisterRequest(device_id="probe", hardware="probe", model_fingerprint=fingerprint),
            timeout=30,
        ).session
        latencies = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            stub.SendHeartbeat(pb.Heartbeat(session=session), timeout=10)
            latencies.append(time.perf_counter() - started)
            time.sleep(interval)
    return latencies


async def run_fleet(
    address: str,
    agents: int,
    seconds: float,
    layout: BlockLayout,
    fingerprint: str,
    certs: Path | None,
) -> tuple[CallLog, float, list[float]]:
    """Run the fleet for `seconds` once every agent is registered; returns the calls, when the
    last agent registered (time.monotonic()) and the probe's heartbeat latencies."""
    calls = CallLog()
    # One connection per agent, as on a real network (no shared subchannel).
    options = [*message_size_options(), ("grpc.use_local_subchannel_pool", 1)]
    names = [f"load-{i:05d}" for i in range(agents)]
    channels = [aio_channel(address, device_tls(certs, name), options) for name in names]
    fleet = [
        FakeAgent(
            coordinator_pb2_grpc.CoordinatorStub(channel),
            names[i],
            fingerprint,
            layout,
            calls,
            efficiency=0.5 + (i % 17) / 4,
            compute=True,
        )
        for i, channel in enumerate(channels)
    ]
    tasks = [asyncio.create_task(agent.run()) for agent in fleet]
    while len(calls.latencies.get("Register", [])) + calls.errors.total() < agents:
        await asyncio.sleep(0.1)
    registered_at = time.monotonic()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        probe = asyncio.get_running_loop().run_in_executor(
            pool, probe_heartbeats, address, fingerprint, seconds, PROBE_INTERVAL_S, certs
        )
        await asyncio.sleep(seconds)
        probed = await probe
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)
    return calls, registered_at, probed


def bench_load(agents: int, seconds: float, tls: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="deft-load-") as folder:
        work = Path(folder)
        model = make_random_encoder(work / "model", "tiny", layers=LAYERS)
        certs = work / "certs" if tls else None
        if certs is not None:
            init_folder(certs, devices=["probe", *(f"load-{i:05d}" for i in range(agents))])
        with Cluster(work / "logs", certs=certs) as cluster:
            cluster.start_scheduler()
            coordinator, _ = cluster.start_coordinator(
                "--model",
                str(model),
                "--rounds",
                "1000000",
                "--eval-every",
                "0",
                "--report-wait",
                "2",
                "--round-timeout",
                "30",
                "--runs-dir",
                str(work / "runs"),
                "--new-run",
                "--history",
                str(work / "history.json"),
                "--threads",
                "1",
            )
            process = psutil.Process(coordinator.process.pid)
            rss_start = process.memory_info().rss
            cpu_start, wall_start = process.cpu_times(), time.monotonic()
            fleet_cpu_start = time.process_time()
            calls, registered_at, probed = asyncio.run(
                run_fleet(
                    cluster.coordinator_address,
                    agents,
                    seconds,
                    layout_of(model),
                    model_fingerprint(model),
                    certs,
                )
            )
            fleet_cpu = time.process_time() - fleet_cpu_start
            rss_end = process.memory_info().rss
            cpu_end, wall_end = process.cpu_times(), time.monotonic()
            time.sleep(1.0)  # the round in flight writes its record
            history = read_history(work / "history.json").rounds
    cpu = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    reports = [record.reported_devices for record in history]
    registered = len(calls.latencies.get("Register", []))
    steady = reports[1:] or reports  # round 1 may open while agents are still registering
    return {
        "agents": agents,
        "seconds": seconds,
        "tls": tls,
        "registration_s": registered_at - wall_start,
        "rpc_ms": {
            rpc: [1e3 * value for value in calls.percentiles(rpc)]
            for rpc in RPCS
            if rpc in calls.latencies
        },
        "calls": {rpc: len(values) for rpc, values in calls.latencies.items()},
        "probe_heartbeat_ms": [1e3 * float(v) for v in np.percentile(probed, [50, 99])],
        "probe_heartbeats": len(probed),
        "errors": {f"{rpc} {code}": n for (rpc, code), n in sorted(calls.errors.items())},
        "failed_heartbeats": sum(
            n for (rpc, _), n in calls.errors.items() if rpc == "SendHeartbeat"
        ),
        "rounds": len(history),
        "reports_per_round_min": min(steady) if steady else 0,
        "reports_per_round_max": max(steady) if steady else 0,
        "registered": registered,
        "rounds_missing_reports": sum(1 for n in steady if n < registered),
        "coordinator_rss_start_mib": rss_start / MiB,
        "coordinator_rss_end_mib": rss_end / MiB,
        "coordinator_rss_growth_mib": (rss_end - rss_start) / MiB,
        "coordinator_cpu_percent": 100 * cpu / (wall_end - wall_start),
        "fleet_cpu_percent": 100 * fleet_cpu / (wall_end - wall_start),
    }


def format_load(result: dict[str, Any]) -> str:
    lines = [
        f"(7) load: {result['agents']} fake agents for {result['seconds']:.0f} s against a real "
        f"coordinator and scheduler, {'mutual TLS' if result.get('tls') else 'plaintext'} "
        f"(all registered after {result['registration_s']:.1f} s)"
    ]
    p50, p99 = result["probe_heartbeat_ms"]
    lines.append(
        f"    heartbeat of a separate probe device: p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
        f"({result['probe_heartbeats']} calls, one every {1e3 * PROBE_INTERVAL_S:.0f} ms)"
    )
    lines.append("    as the fleet saw its calls (includes queueing on its own event loop):")
    for rpc, (p50, p99) in result["rpc_ms"].items():
        lines.append(
            f"    {rpc:16s} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  ({result['calls'][rpc]} calls)"
        )
    errors = ", ".join(f"{key}: {n}" for key, n in result["errors"].items()) or "none"
    lines.append(f"    failed calls: {errors}")
    lines.append(
        f"    {result['rounds']} rounds; reports per round (after round 1) "
        f"{result['reports_per_round_min']}..{result['reports_per_round_max']} of "
        f"{result['registered']} registered; rounds missing a report: "
        f"{result['rounds_missing_reports']}"
    )
    lines.append(
        f"    coordinator RSS {result['coordinator_rss_start_mib']:.0f} -> "
        f"{result['coordinator_rss_end_mib']:.0f} MiB "
        f"({result['coordinator_rss_growth_mib']:+.0f} MiB), CPU "
        f"{result['coordinator_cpu_percent']:.0f}% of a core (the fleet itself: "
        f"{result['fleet_cpu_percent']:.0f}%)"
    )
    return "\n".join(lines)


def load_targets(result: dict[str, Any]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    agents, p99 = result["agents"], result["probe_heartbeat_ms"][1]
    return [
        f"{verdict(result['failed_heartbeats'] == 0)} {result['failed_heartbeats']} failed "
        f"heartbeats with {agents} agents (target 0)",
        f"{verdict(p99 < 100)} heartbeat p99 {p99:.1f} ms with {agents} agents (a probe "
        "device's; target < 100 ms)",
        f"{verdict(result['rounds_missing_reports'] == 0 and result['registered'] == agents)} "
        f"{result['registered']} of {agents} agents registered, every round received every "
        f"registered agent's report ({result['rounds_missing_reports']} of {result['rounds']} "
        "rounds missed some)",
        f"{verdict(result['coordinator_rss_growth_mib'] < 100)} coordinator RSS growth "
        f"{result['coordinator_rss_growth_mib']:.0f} MiB with {agents} agents (target < 100 MiB)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=500, help="fake agents in the fleet")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to load it")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--insecure", action="store_true", help="plaintext instead of mTLS")
    args = parser.parse_args(argv)
    result = bench_load(args.agents, args.seconds, tls=not args.insecure)
    print(format_load(result))
    for line in load_targets(result):
        print("  " + line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

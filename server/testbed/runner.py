"""`deft testbed run`: a real round trip through the emulated wireless testbed.

Scheduler and coordinator in the root namespace, one agent per namespace, each agent's uplink
re-shaped every round to the rate the scheduler allotted it (B_k r_k, its emulated Rayleigh
channel). Afterwards the upload time the scheduler modelled, S / (B_k r_k), is compared with the
one each agent measured on the wire. Everything is removed on exit, also on failure.
"""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from lola_deft.server.cluster import Cluster
from lola_deft.server.export import read_history
from lola_deft.server.pki import init_folder
from lola_deft.server.testbed.netns import HOST_ADDRESS, Testbed, down, up

AGREEMENT = 0.20  # the upload times should agree within 20%
UPLOAD_LINE = re.compile(r"round (\d+) block (\d+): .* uploaded (\d+) bytes in ([0-9.]+) s")


@dataclass
class TestbedConfig:
    __test__ = False  # not a pytest test class, despite the name
    agents: int = 3
    rounds: int = 3
    prefix: str = "deft"
    model_dir: Path | None = None
    bandwidth_hz: float = 1e6
    snr_db: float = 20.0
    path_loss: float = 0.1
    policy: str = "jbba"
    timeout_s: float = 600.0


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_testbed(config: TestbedConfig, log: Any = print) -> dict[str, Any]:
    """Build the testbed, train `rounds` rounds through it, compare upload times, tear down."""
    testbed = Testbed(config.prefix, config.agents)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="deft-testbed-") as folder:
            work = Path(folder)
            up(testbed)
            log(
                f"testbed up: bridge {testbed.bridge} {HOST_ADDRESS}, agents in namespaces "
                + ", ".join(
                    f"{testbed.namespace(i)} ({testbed.agent_address(i)})"
                    for i in range(config.agents)
                )
            )
            model = config.model_dir or _small_model(work)
            # Agents reach the coordinator over the bridge: mutual TLS, as on a real LAN.
            certs = work / "certs"
            init_folder(
                certs,
                server_ips=[HOST_ADDRESS],
                devices=[testbed.device_id(index) for index in range(config.agents)],
            )
            with Cluster(work / "logs", certs=certs) as cluster:
                cluster.start_scheduler()
                coordinator, match = cluster.start_coordinator(
                    "--model",
                    str(model),
                    "--policy",
                    config.policy,
                    "--rounds",
                    str(config.rounds),
                    "--bandwidth-hz",
                    str(config.bandwidth_hz),
                    "--tc-shaping",
                    config.prefix,
                    "--report-wait",
                    "1",
                    "--local-iterations",
                    "1",
                    "--eval-every",
                    "0",
                    "--runs-dir",
                    str(work / "runs"),
                    "--new-run",
                    "--history",
                    str(work / "history.json"),
                    "--threads",
                    "1",
                    host="0.0.0.0",
                )
                assert match is not None
                for index in range(config.agents):
                    cluster.start_agent(
                        testbed.device_id(index),
                        "--model",
                        str(model),
                        "--shard",
                        f"{index}/{config.agents}",
                        "--snr-db",
                        str(config.snr_db),
                        "--path-loss",
                        str(config.path_loss),
                        "--seed",
                        str(index),
                        "--threads",
                        "1",
                        "--max-backoff",
                        "2",
                        "--profile-cache",
                        str(work / "profiles"),
                        coordinator=f"{HOST_ADDRESS}:{match.group(2)}",
                        prefix=["ip", "netns", "exec", testbed.namespace(index)],
                        ready=None,
                    )
                log(f"training {config.rounds} rounds through the shaped links ...")
                try:
                    code = coordinator.process.wait(timeout=config.timeout_s)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"the testbed run did not finish in {config.timeout_s:.0f} s; "
                        f"logs: {_tail(coordinator.log)}"
                    ) from None
                if code != 0:
                    raise RuntimeError(f"coordinator exited with {code}: {_tail(coordinator.log)}")
                time.sleep(1.0)  # agents flush their last log lines
                return _compare(config, work)
    finally:
        removed = down(testbed)
        signal.signal(signal.SIGTERM, previous)
        log(f"testbed down: removed {len(removed)} namespaces and links")


def _small_model(work: Path) -> Path:
    from lola_deft.ml.random_encoder import make_random_encoder

    return make_random_encoder(work / "model", "small")


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


def _compare(config: TestbedConfig, work: Path) -> dict[str, Any]:
    history = read_history(work / "history.json").rounds
    measured: dict[tuple[int, str], float] = {}
    for index in range(config.agents):
        for line in (work / "logs" / f"a{index}.log").read_text(errors="replace").splitlines():
            match = UPLOAD_LINE.search(line)
            if match:
                measured[(int(match.group(1)), f"a{index}")] = float(match.group(4))
    rows: list[dict[str, Any]] = []
    for record in history:
        for entry in record.assignment:
            key = (record.round, entry.device)
            if key not in measured:
                continue
            modelled = entry.modelled_upload_s
            rows.append(
                {
                    "round": record.round,
                    "device": entry.device,
                    "block": entry.block,
                    "bandwidth_hz": entry.bandwidth_hz,
                    "modelled_upload_s": modelled,
                    "measured_upload_s": measured[key],
                    "error": measured[key] / modelled - 1.0,
                }
            )
    if not rows:
        raise RuntimeError("no uploads were measured; see the agent logs")
    errors = [abs(row["error"]) for row in rows]
    return {
        "rows": rows,
        "median_abs_error": statistics.median(errors),
        "max_abs_error": max(errors),
        "within_target": statistics.median(errors) <= AGREEMENT,
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"{'round':>5s} {'device':>6s} {'block':>5s} {'bandwidth kHz':>13s} "
        f"{'modelled s':>10s} {'measured s':>10s} {'error':>7s}"
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['round']:5d} {row['device']:>6s} {row['block']:5d} "
            f"{row['bandwidth_hz'] / 1e3:13.1f} {row['modelled_upload_s']:10.3f} "
            f"{row['measured_upload_s']:10.3f} {100 * row['error']:+6.1f}%"
        )
    verdict = "PASS" if result["within_target"] else "FAIL"
    lines.append(
        f"{verdict} upload time on the wire vs modelled: median |error| "
        f"{100 * result['median_abs_error']:.1f}%, max {100 * result['max_abs_error']:.1f}% "
        f"(target: within {100 * AGREEMENT:.0f}%)"
    )
    return "\n".join(lines)

"""`make bench` part 8: what faults cost, on real processes (a small random encoder, 3 blocks,
4 agents of which one is spare each round, slowed down so a round takes seconds).

- An agent SIGKILLed while it computes its block: that round's wall time against the normal
  rounds'. The block is handed to an idle device once the coordinator's liveness bound (10 s)
  has passed, so the cost is that bound plus one block's retraining.
- The scheduler hung (SIGSTOP: its port still accepts connections but nothing answers, the worst
  kind of outage; a killed one refuses connections and costs milliseconds): the stall of the
  first round without it (its schedule phase, bounded by --scheduler-timeout) and the schedule
  phase of the rounds solved in-process after that.
"""

from __future__ import annotations

import re
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from lola_deft.ml.random_encoder import make_random_encoder
from lola_deft.server.cluster import READY_COORDINATOR, Cluster
from lola_deft.server.export import read_history

ROUNDS = 8
KILL_AGENT_IN = 3
KILL_SCHEDULER_AFTER = 5
SCHEDULER_TIMEOUT_S = 5.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_faults() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="deft-faults-") as folder:
        work = Path(folder)
        model = make_random_encoder(work / "model", "tiny", layers=3)
        common = ["--model", str(model), "--threads", "1"]
        with Cluster(work / "logs", ready_timeout_s=300) as cluster:
            scheduler = cluster.start_scheduler()
            coordinator, _ = cluster.start_coordinator(
                *common,
                "--rounds",
                str(ROUNDS),
                "--min-agents",
                "4",
                "--report-wait",
                "0.5",
                "--eval-every",
                "0",
                "--scheduler-timeout",
                str(SCHEDULER_TIMEOUT_S),
                "--runs-dir",
                str(work / "runs"),
                "--new-run",
                "--history",
                str(work / "history.json"),
                ready=READY_COORDINATOR,
            )
            agents = {
                f"dev{i}": cluster.start_agent(
                    f"dev{i}",
                    *common,
                    "--shard",
                    f"{i}/4",
                    "--slowdown",
                    "20",
                    "--profile-cache",
                    str(work / "profiles"),
                )
                for i in range(4)
            }
            victim = ""
            for line in coordinator.lines():
                dispatched = re.search(rf"round {KILL_AGENT_IN} dispatched: (.*)", line)
                if dispatched:
                    holders = dict(e.split(":")[::-1] for e in dispatched.group(1).split())
                    victim = min(holders)
                    log(
                        f"  round {KILL_AGENT_IN}: SIGKILL {victim} (holds block {holders[victim]})"
                    )
                    agents[victim].process.send_signal(signal.SIGKILL)
                if line.startswith(f"round {KILL_SCHEDULER_AFTER:3d}/"):
                    log(f"  after round {KILL_SCHEDULER_AFTER}: SIGSTOP the scheduler (hung)")
                    scheduler.process.send_signal(signal.SIGSTOP)
                    break
            code = coordinator.process.wait(timeout=600)
            scheduler.process.send_signal(signal.SIGKILL)
            if code != 0:
                raise RuntimeError(f"the coordinator exited with {code}; see {work / 'logs'}")
        rounds = read_history(work / "history.json").rounds
    killed = rounds[KILL_AGENT_IN - 1]
    normal = [r for r in rounds[:KILL_SCHEDULER_AFTER] if r.round != KILL_AGENT_IN and r.round > 1]
    outage = rounds[KILL_SCHEDULER_AFTER]
    after = rounds[KILL_SCHEDULER_AFTER + 1 :]
    return {
        "rounds": len(rounds),
        "normal_round_s": statistics.median(r.measured_wall_s for r in normal),
        "killed_round_s": killed.measured_wall_s,
        "killed_blocks_updated": killed.blocks_updated,
        "blocks": 3,
        "reassignments": [vars(moved) for moved in killed.reassignments],
        "normal_schedule_ms": 1e3 * statistics.median(r.coordinator_s["schedule"] for r in normal),
        "outage_schedule_ms": 1e3 * outage.coordinator_s["schedule"],
        "fallback_schedule_ms": 1e3
        * statistics.median(r.coordinator_s["schedule"] for r in after or [outage]),
        "outage_allocators": [r.allocator for r in rounds[KILL_SCHEDULER_AFTER:]],
        "all_blocks_every_round": all(r.blocks_updated == [1, 2, 3] for r in rounds),
        "scheduler_timeout_s": SCHEDULER_TIMEOUT_S,
    }


def format_faults(result: dict[str, Any]) -> str:
    moved = result["reassignments"]
    handed = (
        f"block {moved[0]['block']} handed from {moved[0]['from_device']} to "
        f"{moved[0]['to_device']} after {moved[0]['at_s']:.1f} s"
        if moved
        else "no hand-over"
    )
    return (
        f"(8) faults: a normal round {result['normal_round_s']:.1f} s; with the agent holding a "
        f"block SIGKILLed mid-compute {result['killed_round_s']:.1f} s ({handed}; blocks "
        f"updated {result['killed_blocks_updated']})\n"
        f"    scheduler hung (SIGSTOP): the next round's schedule phase "
        f"{result['outage_schedule_ms']:.0f} ms (bound: --scheduler-timeout "
        f"{result['scheduler_timeout_s']:.0f} s), then {result['fallback_schedule_ms']:.1f} ms "
        f"in-process (normal: {result['normal_schedule_ms']:.1f} ms over gRPC); rounds after "
        f"the kill: {', '.join(result['outage_allocators'])}"
    )


def fault_targets(result: dict[str, Any]) -> list[str]:
    complete = result["killed_blocks_updated"] == list(range(1, result["blocks"] + 1))
    stall = result["outage_schedule_ms"] / 1e3
    bound = result["scheduler_timeout_s"] + 1.0
    return [
        f"{'PASS' if complete else 'FAIL'} the round with a killed agent trained every block "
        f"({result['killed_blocks_updated']})",
        f"{'PASS' if stall <= bound else 'FAIL'} scheduler outage stall {stall:.1f} s "
        f"(target <= {bound:.0f} s)",
        f"{'PASS' if result['all_blocks_every_round'] else 'FAIL'} every round trained every "
        "block despite both faults",
    ]

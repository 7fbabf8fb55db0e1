"""`deft coordinator serve` and `deft agent`: the long-running roles."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protos.credentials import TlsConfigError, add_tls_arguments, tls_from_args
from protos.grpc_options import MEBIBYTE

UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def byte_size(text: str) -> float:
    """'1.5G', '512Mi', '2000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]i?)?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 512Mi, 1500000000)")
    return float(match.group(1)) * UNITS[(match.group(2) or "").lower()]


def shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N); 'auto/N' -> (-1, N): the coordinator's registration order picks I."""
    match = re.fullmatch(r"(\d+|auto)/(\d+)", text)
    if match and match.group(1) == "auto" and int(match.group(2)) > 0:
        return -1, int(match.group(2))
    if not match or match.group(1) == "auto" or int(match.group(1)) >= int(match.group(2)):
        raise argparse.ArgumentTypeError(
            f"shard must be I/N with 0 <= I < N, or auto/N, got {text!r}"
        )
    return int(match.group(1)), int(match.group(2))


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="local Hugging Face encoder directory (default: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="GLUE task folder with train.tsv/dev.tsv (default: embedded sst2-mini)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, task and training budget: shared by the coordinator and the centralized baseline,
    so both can be given the same settings."""
    add_model_arguments(parser)
    parser.add_argument("--task", default="sst2", help="GLUE task name (cola, sst2, mrpc, ...)")
    parser.add_argument(
        "--local-iterations",
        type=int,
        default=2,
        help="M: mini-batches per device per round (per centralized step)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lora-targets", default="query,value")
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TrainingSettings fields from add_training_arguments' flags."""
    from device_agent.glue import EMBEDDED_TASK_DIR
    from device_agent.model import LoraSettings, default_model_dir

    return {
        "model_dir": args.model or default_model_dir(),
        "data_dir": args.data or EMBEDDED_TASK_DIR,
        "task": args.task,
        "local_iterations": args.local_iterations,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "learning_rate": args.lr,
        "lora": LoraSettings(args.lora_rank, args.lora_alpha, tuple(args.lora_targets.split(","))),
        "eval_every": args.eval_every,
        "seed": args.seed,
    }


def add_coordinator_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("coordinator", help="the round coordinator (edge server)")
    commands = parser.add_subparsers(dest="coordinator_command", required=True)
    serve = commands.add_parser("serve", help="run rounds with the agents that register")
    serve.add_argument("--host", default="[::]")
    serve.add_argument("--port", type=int, default=50052, help="gRPC port (0 picks a free one)")
    serve.add_argument("--scheduler", default="127.0.0.1:50051", help="scheduler HOST:PORT")
    serve.add_argument("--policy", default="jbba", help="scheduling policy (see deft schedule -h)")
    add_training_arguments(serve)
    serve.add_argument("--rounds", type=int, default=20)
    serve.add_argument("--bandwidth-hz", type=float, default=100e6, help="uplink band B")
    serve.add_argument("--min-agents", type=int, default=0, help="default: number of blocks")
    serve.add_argument(
        "--report-wait",
        type=float,
        default=2.0,
        help="seconds to wait for more reports once enough agents reported",
    )
    serve.add_argument("--round-timeout", type=float, default=300.0)
    serve.add_argument("--checkpoint-dir", type=Path, default=Path("deft-run/checkpoints"))
    serve.add_argument("--history", type=Path, default=None, help="write round records as JSON")
    serve.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    serve.add_argument(
        "--finish-grace",
        type=float,
        default=60.0,
        help="after the last round, seconds to keep serving until every live agent has been "
        "told that training is over",
    )
    serve.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")
    serve.add_argument("--max-message-mb", type=int, default=64)
    serve.add_argument(
        "--tc-shaping",
        metavar="PREFIX",
        default=None,
        help="testbed: shape agent aI's uplink (namespace PREFIX-aI) to B_k r_k every round",
    )
    serve.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    add_tls_arguments(serve, server=True)
    add_tls_arguments(serve, "--scheduler-tls", server=False)
    serve.set_defaults(handler=run_coordinator)


def add_agent_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("agent", help="a device agent that trains assigned blocks")
    parser.add_argument("--coordinator", required=True, help="coordinator HOST:PORT")
    parser.add_argument("--id", default=None, help="device id (default: hostname-pid)")
    add_model_arguments(parser)
    parser.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        help="I/N: this agent's part of the data; auto/N: I from the registration order",
    )
    parser.add_argument("--shard-mode", choices=["iid", "label-skew"], default="iid")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--memory-limit",
        type=byte_size,
        default=None,
        help="cap the reported memory (e.g. 300M) to emulate a smaller device",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=1.0,
        help="emulate hardware X times slower (sleeps after each iteration)",
    )
    parser.add_argument("--channel", choices=["emulated", "measured"], default="emulated")
    parser.add_argument("--snr-db", type=float, default=10.0, help="emulated transmit SNR")
    parser.add_argument("--path-loss", type=float, default=1e-3, help="emulated path loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-cache", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--max-message-mb", type=int, default=64)
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve this agent's Prometheus /metrics"
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        help="longest wait between reconnection attempts, seconds",
    )
    add_tls_arguments(parser, server=False)
    parser.set_defaults(handler=run_agent)


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _wait_for_signal(stop: threading.Event) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


def user_errors(
    role: str, loader: Callable[[], tuple[type[Exception], ...]]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Turn the errors a user can cause (bad model or data folder, no checkpoint, busy port)
    into one clear line and exit status 2 instead of a traceback."""

    def wrap(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(function)
        def run(args: argparse.Namespace) -> int:
            expected = loader()
            try:
                return function(args)
            except expected as error:
                print(f"deft {role}: error: {error}", file=sys.stderr)
                return 2

        return run

    return wrap


def _model_and_data_errors() -> tuple[type[Exception], ...]:
    from device_agent.glue import DataError
    from device_agent.model import ModelError

    return ModelError, DataError, OSError, TlsConfigError


def _coordinator_errors() -> tuple[type[Exception], ...]:
    from server.training_state import CheckpointError

    return (*_model_and_data_errors(), CheckpointError)


def _agent_errors() -> tuple[type[Exception], ...]:
    from device_agent.agent import DeviceUnavailable

    return (*_model_and_data_errors(), DeviceUnavailable)


@user_errors("coordinator", _coordinator_errors)
def run_coordinator(args: argparse.Namespace) -> int:
    setup_logging()
    _set_threads(args.threads)
    from server.progress import print_baseline, print_round
    from server.rounds import CoordinatorConfig
    from server.service import start_coordinator

    config = CoordinatorConfig(
        **training_settings(args),
        rounds=args.rounds,
        policy=args.policy,
        scheduler_address=args.scheduler,
        bandwidth_hz=args.bandwidth_hz,
        min_agents=args.min_agents,
        report_wait_s=args.report_wait,
        round_timeout_s=args.round_timeout,
        checkpoint_dir=args.checkpoint_dir,
        history_path=args.history,
        resume=args.resume,
    )
    running = start_coordinator(
        config,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        max_message_bytes=args.max_message_mb * MEBIBYTE,
        on_round=lambda record: print_round(record, config.rounds),
        on_baseline=print_baseline,
        on_allocation=_shaper(args.tc_shaping),
        tls=tls_from_args(args),
        scheduler_tls=tls_from_args(args, "--scheduler-tls"),
    )
    stop = threading.Event()
    _wait_for_signal(stop)  # before "listening": callers may signal right after reading it
    metrics = f", metrics on :{running.metrics_port}" if running.metrics_port else ""
    print(f"coordinator listening on {args.host}:{running.port}{metrics}", flush=True)
    while not stop.is_set() and not running.engine.finished.is_set():
        stop.wait(0.5)
    if running.engine.finished.is_set() and not stop.is_set():
        missing = running.engine.wait_for_farewells(args.finish_grace)
        if missing:
            print(f"agents that never heard the end of training: {sorted(missing)}", flush=True)
    running.stop()
    print(f"coordinator stopped after {running.engine.state.round} rounds", flush=True)
    if running.engine.error is not None:
        print(f"coordinator failed: {running.engine.error!r}", file=sys.stderr)
        return 1
    return 0


def _shaper(prefix: str | None) -> Callable[[dict[str, float]], None] | None:
    if prefix is None:
        return None
    from server.testbed.netns import Testbed, shape

    testbed = Testbed(prefix, agents=0)

    def apply(rates: dict[str, float]) -> None:
        for device, rate in rates.items():
            shape(testbed, testbed.index_of(device), rate)

    return apply


@user_errors("agent", _agent_errors)
def run_agent(args: argparse.Namespace) -> int:
    setup_logging()
    _set_threads(args.threads)
    from device_agent.agent import AgentConfig, DeviceAgent
    from device_agent.glue import EMBEDDED_TASK_DIR
    from device_agent.model import default_model_dir

    config = AgentConfig(
        coordinator=args.coordinator,
        device_id=args.id or f"{socket.gethostname()}-{os.getpid()}",
        model_dir=args.model or default_model_dir(),
        data_dir=args.data or EMBEDDED_TASK_DIR,
        shard=args.shard[0],
        num_shards=args.shard[1],
        shard_mode=args.shard_mode,
        device=args.device,
        memory_limit_bytes=args.memory_limit,
        slowdown=args.slowdown,
        channel=args.channel,
        transmit_snr_db=args.snr_db,
        path_loss=args.path_loss,
        seed=args.seed,
        profile_cache=args.profile_cache,
        max_message_bytes=args.max_message_mb * MEBIBYTE,
        max_backoff_s=args.max_backoff,
        metrics_port=args.metrics_port,
        tls=tls_from_args(args),
    )
    agent = DeviceAgent(config)
    _wait_for_signal(agent.stop)
    return agent.run()


def add_centralized_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "centralized", help="fine-tune the same model and task in one process, for comparison"
    )
    add_training_arguments(parser)
    parser.add_argument("--steps", type=int, default=20, help="Adam steps (= DEFT rounds)")
    parser.add_argument("--out", type=Path, default=None, help="write the step records as JSON")
    parser.set_defaults(handler=run_centralized)


@user_errors("centralized", _model_and_data_errors)
def run_centralized(args: argparse.Namespace) -> int:
    setup_logging()
    from server.centralized import CentralizedConfig, final_metric, train_centralized

    config = CentralizedConfig(**training_settings(args), steps=args.steps)

    def show(record: dict[str, Any]) -> None:
        evaluation = record.get("eval")
        metric = f" | metric {evaluation['metric']:.4f}" if evaluation else ""
        print(
            f"step {record['step']:4d}/{config.steps} | loss {record['train_loss']:.4f}"
            f" | {record['seconds']:.2f} s{metric}",
            flush=True,
        )

    records = train_centralized(config, on_step=show)
    baseline = records[0]["eval"]
    print(
        f"metric ({baseline['metric_name']}) before: {baseline['metric']:.4f}  "
        f"after {config.steps} steps: {final_metric(records):.4f}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=1))
    return 0


def add_health_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health", help="probe a scheduler or coordinator with the standard gRPC health protocol"
    )
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    add_tls_arguments(parser, server=False)
    parser.set_defaults(handler=run_health)


def run_health(args: argparse.Namespace) -> int:
    """Exit 0 when SERVING (for container HEALTHCHECKs), 1 otherwise."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos.credentials import open_channel

    try:
        with open_channel(args.target, tls_from_args(args)) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"{args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def add_testbed_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "testbed", help="emulated multi-host wireless testbed (network namespaces + tc; root)"
    )
    commands = parser.add_subparsers(dest="testbed_command", required=True)
    for name, text in (
        ("up", "create the namespaces, veth links and bridge"),
        ("down", "remove everything `up` created"),
        ("run", "up, train a few rounds through shaped links, compare, down"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--prefix", default="deft", help="name prefix of what is created")
        if name != "down":
            command.add_argument("--agents", type=int, default=3)
        if name == "run":
            command.add_argument("--rounds", type=int, default=3)
            add_model_arguments(command)
            command.add_argument("--bandwidth-hz", type=float, default=1e6)
            command.add_argument("--snr-db", type=float, default=20.0)
            command.add_argument("--path-loss", type=float, default=0.1)
            command.add_argument("--policy", default="jbba")
            command.add_argument("--json", type=Path, default=None, help="write the comparison")
        command.set_defaults(handler=run_testbed_command)


def run_testbed_command(args: argparse.Namespace) -> int:
    from server.testbed.netns import HOST_ADDRESS, Testbed, TestbedUnavailable, down, up

    testbed = Testbed(args.prefix, getattr(args, "agents", 0))
    try:
        if args.testbed_command == "down":
            removed = down(testbed)
            print(f"removed {len(removed)}: {' '.join(removed) or '(nothing)'}")
            return 0
        if args.testbed_command == "up":
            up(testbed)
            print(
                f"bridge {testbed.bridge} {HOST_ADDRESS}/24 (run the coordinator with "
                f"--host 0.0.0.0 --tc-shaping {args.prefix})"
            )
            for index in range(testbed.agents):
                print(
                    f"agent a{index}: ip netns exec {testbed.namespace(index)} deft agent "
                    f"--coordinator {HOST_ADDRESS}:50052 --id a{index}   "
                    f"# {testbed.agent_address(index)}"
                )
            return 0
        from server.testbed.runner import TestbedConfig, format_report, run_testbed

        result = run_testbed(
            TestbedConfig(
                agents=args.agents,
                rounds=args.rounds,
                prefix=args.prefix,
                model_dir=args.model,
                bandwidth_hz=args.bandwidth_hz,
                snr_db=args.snr_db,
                path_loss=args.path_loss,
                policy=args.policy,
            )
        )
        print(format_report(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    except TestbedUnavailable as error:
        print(f"deft testbed: unavailable here: {error}", file=sys.stderr)
        return 3
    except (RuntimeError, ValueError) as error:
        print(f"deft testbed: error: {error}", file=sys.stderr)
        return 1

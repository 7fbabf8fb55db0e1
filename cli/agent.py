"""`deft agent`: the device agent, the one role an agent-only install carries."""

from __future__ import annotations

import argparse
import os
import socket
import threading
from pathlib import Path
from typing import Any

from lola_deft.cli.common import (
    add_model_arguments,
    byte_size,
    model_and_data_errors,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    positive_seconds,
    set_threads,
    setup_logging,
    shard,
    user_errors,
    wait_for_signal,
)
from lola_deft.protos.credentials import add_tls_arguments, tls_from_args
from lola_deft.protos.grpc_options import MEBIBYTE


def add_agent_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("agent", help="a device agent that trains assigned blocks")
    parser.add_argument("--coordinator", required=True, help="coordinator HOST:PORT")
    parser.add_argument(
        "--id",
        default=None,
        help="device id; must be the one its certificate names (default: the --tls-cert file's "
        "name without .pem, as `deft certs` writes it; with --insecure: hostname-pid)",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        help="I/N: this agent's part of the data; auto/N: I from the registration order",
    )
    parser.add_argument(
        "--shard-mode",
        choices=["iid", "label-skew"],
        default="iid",
        help="how the training set is split over devices: i.i.d., or label-skewed "
        "(Dirichlet proportions)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where this agent computes (auto: cuda when available)",
    )
    parser.add_argument(
        "--memory-limit",
        type=byte_size,
        default=None,
        help="cap the reported memory (e.g. 300M) to emulate a smaller device",
    )
    parser.add_argument(
        "--slowdown",
        type=positive_float,
        default=1.0,
        help="emulate hardware X times slower (sleeps after each iteration)",
    )
    parser.add_argument(
        "--channel",
        choices=["emulated", "measured"],
        default="emulated",
        help="spectral efficiency reported: emulated Rayleigh fading from --snr-db and "
        "--path-loss, or measured from this agent's real uploads",
    )
    parser.add_argument("--snr-db", type=float, default=10.0, help="emulated transmit SNR, in dB")
    parser.add_argument(
        "--path-loss",
        type=positive_float,
        default=1e-3,
        help="emulated mean path loss (power gain)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of local batch sampling and, with the device id, of the emulated channel's "
        "fading (devices fade independently under one seed)",
    )
    parser.add_argument(
        "--profile-cache",
        type=Path,
        default=None,
        help="folder for the per-block profile, reused when model and setup match (default: "
        "$LOLA_DEFT_CACHE/profiles, else ~/.cache/lola-deft/profiles)",
    )
    parser.add_argument(
        "--activation-cache",
        type=Path,
        default=None,
        help="--method pac runs: folder for the backbone states of this device's samples, "
        "reused across restarts while model, task, shard and length match (default: "
        "$LOLA_DEFT_CACHE/activations, else ~/.cache/lola-deft/activations)",
    )
    parser.add_argument(
        "--cache-memory",
        type=byte_size,
        default=512 * 2**20,
        help="--method pac: memory the activation cache may hold, e.g. 512Mi (default), 2Gi",
    )
    parser.add_argument(
        "--cache-disk",
        type=byte_size,
        default=4 * 2**30,
        help="--method pac: disk the activation cache may use beyond its memory, e.g. 4Gi "
        "(default); samples beyond both budgets run the backbone every epoch",
    )
    parser.add_argument(
        "--cache-storage",
        choices=("float32", "float16", "int8"),
        default="float16",
        help="--method pac: how cached states are stored (float16: half of float32; int8: a "
        "quarter, one scale per token and layer)",
    )
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    parser.add_argument(
        "--max-message-mb",
        type=positive_int,
        default=64,
        help="largest single message accepted from the coordinator, MiB",
    )
    parser.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        help="serve this agent's Prometheus /metrics on this port (default: none)",
    )
    parser.add_argument(
        "--max-backoff",
        type=positive_seconds,
        default=30.0,
        help="longest wait between reconnection attempts, seconds",
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds one try at reaching the coordinator may take (default: %(default)s)",
    )
    parser.add_argument(
        "--connect-attempts",
        type=non_negative_int,
        default=5,
        help="tries at reaching the coordinator before giving up at start-up, with back-off; "
        "0: keep trying (once registered, the agent always reconnects) (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        help="address of the /metrics endpoint (default: all interfaces, for the edge server's "
        "Prometheus)",
    )
    add_tls_arguments(parser, server=False)
    parser.set_defaults(handler=run_agent)


def _agent_errors() -> tuple[type[Exception], ...]:
    from lola_deft.device_agent.agent import DeviceUnavailable
    from lola_deft.device_agent.connection import CoordinatorUnreachable
    from lola_deft.device_agent.worker import SetupError

    return (*model_and_data_errors(), DeviceUnavailable, CoordinatorUnreachable, SetupError)


@user_errors("agent", _agent_errors)
def run_agent(args: argparse.Namespace) -> int:
    setup_logging()
    set_threads(args.threads)
    from lola_deft.device_agent.agent import AgentConfig, DeviceAgent
    from lola_deft.device_agent.connection import reach
    from lola_deft.ml.glue import EMBEDDED_TASK_DIR
    from lola_deft.ml.model import default_model_dir, require_model_dir

    tls = tls_from_args(args, role="deft agent")
    default_id = tls.cert.stem if tls.cert else f"{socket.gethostname()}-{os.getpid()}"
    config = AgentConfig(
        coordinator=args.coordinator,
        device_id=args.id or default_id,
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
        activation_cache=args.activation_cache,
        cache_memory_bytes=args.cache_memory,
        cache_disk_bytes=args.cache_disk,
        cache_storage=args.cache_storage,
        max_message_bytes=args.max_message_mb * MEBIBYTE,
        max_backoff_s=args.max_backoff,
        connect_timeout_s=args.connect_timeout,
        connect_attempts=args.connect_attempts,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        tls=tls,
    )
    # What is checked in an instant first, then the coordinator, then the model (minutes):
    # a wrong folder or address is an error in seconds.
    require_model_dir(config.model_dir)
    stop = threading.Event()
    wait_for_signal(stop)
    reach(
        config.coordinator,
        tls,
        stop,
        config.connect_timeout_s,
        config.connect_attempts,
        config.max_backoff_s,
    )
    if stop.is_set():
        return 0
    agent = DeviceAgent(config)
    wait_for_signal(agent.stop)
    return agent.run()

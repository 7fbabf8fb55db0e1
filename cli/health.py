"""`deft health`: container health checks. For the scheduler and the coordinator, the standard
gRPC health protocol; for an agent (a gRPC client, with nothing to probe), its metrics endpoint:
healthy only while the coordinator keeps answering it."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from lola_deft.cli.common import positive_seconds
from lola_deft.protos.credentials import add_tls_arguments, tls_from_args


def add_health_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="probe a scheduler or coordinator (gRPC health protocol), or an agent (--agent)",
    )
    parser.add_argument("target", help="HOST:PORT (an agent's: its --metrics-port)")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument(
        "--timeout", type=positive_seconds, default=3.0, help="seconds to wait for the answer"
    )
    parser.add_argument(
        "--agent",
        action="store_true",
        help="TARGET is an agent's metrics endpoint: healthy when the coordinator answered it "
        "within --max-silence seconds",
    )
    parser.add_argument("--max-silence", type=float, default=60.0, help="with --agent")
    add_tls_arguments(parser, server=False)
    parser.set_defaults(handler=run_health)


def run_health(args: argparse.Namespace) -> int:
    """Exit 0 when healthy (for container HEALTHCHECKs), 1 when not, 2 for a usage mistake."""
    if args.agent:
        return agent_health(args.target, args.max_silence, args.timeout)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from lola_deft.protos.credentials import TlsConfigError, open_channel

    try:
        tls = tls_from_args(args, role="deft health")
    except TlsConfigError as error:
        print(f"deft health: error: {error}", file=sys.stderr)
        return 2
    try:
        with open_channel(args.target, tls) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"{args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def agent_health(target: str, max_silence: float, timeout: float) -> int:
    import urllib.request

    from lola_deft.device_agent.metrics import LAST_CONTACT

    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError as error:
        print(f"{target}: agent metrics unreachable: {error}", file=sys.stderr)
        return 1
    match = re.search(rf"^{LAST_CONTACT}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    if match is None:
        print(f"{target}: the agent has not reached the coordinator yet", file=sys.stderr)
        return 1
    silence = time.time() - float(match.group(1))
    if silence > max_silence:
        print(f"{target}: no answer from the coordinator for {silence:.0f} s", file=sys.stderr)
        return 1
    print(f"{target}: the coordinator answered {silence:.0f} s ago")
    return 0

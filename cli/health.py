"""`deft health`: the standard gRPC health probe, for container health checks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lola_deft.protos.credentials import add_tls_arguments, tls_from_args


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

"""`deft schedule` and `deft scheduler serve`.

Exit status of `deft schedule`: 0 success, 2 malformed input (message names the field),
3 no feasible allocation (message says why).
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from lola_deft.protos.credentials import TlsConfigError, add_tls_arguments, tls_from_args
from lola_deft.scheduler.errors import InfeasibleError, InstanceError
from lola_deft.scheduler.policy_names import DEFAULT_POLICY, POLICY_HELP

EXIT_OK, EXIT_MALFORMED, EXIT_INFEASIBLE = 0, 2, 3
EXAMPLE = Path(__file__).with_name("examples") / "paper_round.json"


def add_schedule_command(subparsers: Any) -> None:
    policies = "\n".join(f"  {name:12s} {POLICY_HELP[name]}" for name in POLICY_HELP)
    parser = subparsers.add_parser(
        "schedule",
        help="allocate blocks and bandwidth for one round read as JSON",
        description="Read a scheduling instance as JSON and print the allocation as JSON.",
        epilog=f"policies:\n{policies}\n\nexit status: 0 ok, 2 malformed input, 3 infeasible",
    )
    parser.add_argument("instance", help="instance JSON file, or - for standard input")
    parser.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        choices=sorted(POLICY_HELP),
        help="allocation policy (listed above)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the random policy")
    parser.add_argument(
        "--remote",
        metavar="HOST:PORT",
        help="ask a running scheduler service instead of solving here",
    )
    add_tls_arguments(parser, server=False)
    parser.set_defaults(handler=run_schedule)


def add_compare_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="solve one round with every policy and print a table",
        description="Solve one round with every policy; defaults to the embedded paper round.",
    )
    parser.add_argument(
        "instance", nargs="?", default=None, help="instance JSON file or - (default: embedded)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random policy")
    parser.set_defaults(handler=run_compare)


def add_scheduler_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("scheduler", help="the scheduler microservice")
    commands = parser.add_subparsers(dest="scheduler_command", required=True)
    serve = commands.add_parser("serve", help="serve the Allocate RPC over gRPC")
    serve.add_argument("--host", default="[::]", help="address to bind (default: all)")
    serve.add_argument("--port", type=int, default=50051, help="port (0 picks a free one)")
    serve.add_argument("--workers", type=int, default=4, help="concurrent requests")
    serve.add_argument(
        "--max-message-mb", type=int, default=64, help="gRPC message size limit in MiB"
    )
    serve.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")
    serve.add_argument(
        "--metrics-host",
        default=None,
        help="address of the /metrics endpoint (default: the --host address)",
    )
    add_tls_arguments(serve, server=True)
    serve.set_defaults(handler=run_serve)


def _fail(code: int, message: str, stream: TextIO) -> int:
    print(f"deft schedule: error: {message}", file=stream)
    return code


def _read_instance(path: str | None) -> Any:
    if path is None:
        return json.loads(EXAMPLE.read_text(encoding="utf-8"))
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as handle:
            data = handle.read()
    return parse_json(data.removeprefix(codecs.BOM_UTF8))  # a byte-order mark is no error


def parse_json(data: bytes) -> Any:
    """orjson when it is installed (the server extra has it: 10,000 devices parse 5x faster);
    the standard library otherwise, and for what orjson refuses (NaN literals, which the
    validator then names by field) and for its error messages."""
    try:
        import orjson
    except ImportError:
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8"))


def _load(path: str | None) -> tuple[Any, int | None]:
    """The instance document, or (None, exit status) after printing why it could not be read."""
    try:
        return _read_instance(path), None
    except OSError as error:
        return None, _fail(EXIT_MALFORMED, f"cannot read {path}: {error.strerror}", sys.stderr)
    except json.JSONDecodeError as error:
        message = f"instance: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        return None, _fail(EXIT_MALFORMED, message, sys.stderr)
    except UnicodeDecodeError as error:
        message = f"instance: not UTF-8 text (byte {error.start}: {error.reason})"
        return None, _fail(EXIT_MALFORMED, message, sys.stderr)


def run_schedule(args: argparse.Namespace) -> int:
    doc, status = _load(args.instance)
    if status is not None:
        return status
    if isinstance(doc, dict) and "plan" in doc:
        return _plan(doc, args)
    if args.remote:
        return _schedule_remote(doc, args)
    from lola_deft.scheduler.instance import parse_instance
    from lola_deft.scheduler.policies import solve

    try:
        allocation = solve(parse_instance(doc), args.policy, seed=args.seed)
    except InstanceError as error:
        return _fail(EXIT_MALFORMED, str(error), sys.stderr)
    except InfeasibleError as error:
        return _fail(EXIT_INFEASIBLE, f"infeasible: {error}", sys.stderr)
    json.dump(allocation.to_json(), sys.stdout, indent=2)
    print()
    return EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    from lola_deft.scheduler.instance import parse_instance
    from lola_deft.scheduler.policies import solve

    doc, status = _load(args.instance)
    if status is not None:
        return status
    try:
        instance = parse_instance(doc)
    except InstanceError as error:
        return _fail(EXIT_MALFORMED, str(error), sys.stderr)
    source = args.instance or f"embedded {EXAMPLE.name}"
    print(f"{instance.num_devices} devices, {instance.num_blocks} blocks ({source})")
    width = max(len(policy) for policy in POLICY_HELP)
    print(f"{'policy':{width}s} {'round latency s':>16s} {'solve ms':>9s}  devices by block")
    for policy in POLICY_HELP:
        try:
            allocation = solve(instance, policy, seed=args.seed)
        except (InstanceError, InfeasibleError) as error:
            print(f"{policy:{width}s} {'-':>16s} {'-':>9s}  {error}")
            continue
        devices = " ".join(instance.device_ids[k] for k in allocation.devices)
        print(
            f"{policy:{width}s} {allocation.latency_s:16.4f} {allocation.solve_seconds * 1e3:9.2f}"
            f"  {devices}"
        )
    return EXIT_OK


def _plan(doc: dict[str, Any], args: argparse.Namespace) -> int:
    """A PAC+ plan ("plan": "pipeline" or "shares"), here or on the --remote scheduler."""
    from lola_deft.scheduler import pac_convert

    plan = doc.pop("plan")
    if plan not in pac_convert.PLANS:
        known = " or ".join(repr(p) for p in pac_convert.PLANS)
        return _fail(EXIT_MALFORMED, f"plan: {str(plan)[:20]!r} is not {known}", sys.stderr)
    if args.remote:
        from google.protobuf import json_format

        from lola_deft.protos.deft.v1 import scheduler_pb2

        pipeline = plan == "pipeline"
        kind = scheduler_pb2.PlanPipelineRequest if pipeline else scheduler_pb2.PlanSharesRequest
        return _remote(
            doc,
            args,
            lambda d: json_format.ParseDict(d, kind()),
            lambda client, request: (client.plan_pipeline if pipeline else client.plan_shares)(
                request, wait_for_ready=False
            ),
            pac_convert.response_json,
        )
    solve = pac_convert.solve_pipeline if plan == "pipeline" else pac_convert.solve_shares
    try:
        response = solve(doc)
    except InstanceError as error:
        return _fail(EXIT_MALFORMED, str(error), sys.stderr)
    except InfeasibleError as error:
        return _fail(EXIT_INFEASIBLE, f"infeasible: {error}", sys.stderr)
    json.dump(pac_convert.response_json(response), sys.stdout, indent=2)
    print()
    return EXIT_OK


def _schedule_remote(doc: Any, args: argparse.Namespace) -> int:
    from lola_deft.scheduler.convert import request_from_instance_doc, response_to_json

    return _remote(
        doc,
        args,
        lambda d: request_from_instance_doc(d, args.policy, args.seed),
        lambda client, request: client.allocate(request, wait_for_ready=False),
        response_to_json,
    )


def _remote(
    doc: Any,
    args: argparse.Namespace,
    build: Callable[[Any], Any],
    call: Callable[[Any, Any], Any],
    to_json: Callable[[Any], dict[str, Any]],
) -> int:
    """One call to the --remote scheduler (a service that is down is said at once), its
    statuses turned into this command's exit codes."""
    import grpc
    from google.protobuf import json_format

    from lola_deft.protos.grpc_options import unreachable_reason
    from lola_deft.scheduler.client import SchedulerClient

    try:
        request = build(doc)
    except (json_format.ParseError, TypeError, AttributeError) as error:
        return _fail(EXIT_MALFORMED, f"instance: {error}", sys.stderr)
    try:
        with SchedulerClient(args.remote, tls=tls_from_args(args, role="deft schedule")) as client:
            response = call(client, request)
    except TlsConfigError as error:
        return _fail(EXIT_MALFORMED, str(error), sys.stderr)
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            reason = unreachable_reason(error, 0)
            return _fail(
                EXIT_MALFORMED, f"cannot reach the scheduler at {args.remote}: {reason}", sys.stderr
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return _fail(EXIT_MALFORMED, details, sys.stderr)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return _fail(EXIT_INFEASIBLE, details, sys.stderr)
        return _fail(1, f"scheduler at {args.remote}: {code.name}: {details}", sys.stderr)
    json.dump(to_json(response), sys.stdout, indent=2)
    print()
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from lola_deft.scheduler.service import start_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        tls = tls_from_args(args, role="deft scheduler")
        running = start_scheduler(
            args.host,
            args.port,
            max_message_bytes=args.max_message_mb * 2**20,
            workers=args.workers,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            tls=tls,
            require_coordinator=tls.enabled,
        )
    except (TlsConfigError, OSError) as error:
        print(f"deft scheduler: error: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before "listening": callers may signal then
        signal.signal(signum, lambda *_: stop.set())
    metrics = f", metrics on :{running.metrics_port}" if running.metrics_port else ""
    print(f"scheduler listening on {args.host}:{running.port}{metrics}", flush=True)
    stop.wait()
    running.stop()
    return EXIT_OK

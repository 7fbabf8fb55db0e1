"""`deft coordinator serve` and `deft centralized`: the edge server's long-running role and its
single-process baseline. Server code is imported when a command runs, so the parser builds in
an agent-only install too (and says so when asked for these)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lola_deft.cli.common import (
    add_payload_arguments,
    add_policy_argument,
    add_training_arguments,
    model_and_data_errors,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    positive_seconds,
    set_threads,
    setup_logging,
    training_settings,
    user_errors,
    wait_for_signal,
)
from lola_deft.cli.run_config import add_config_argument
from lola_deft.protos.credentials import (
    TlsConfigError,
    TlsFiles,
    add_tls_arguments,
    require_mutual,
    tls_from_args,
)
from lola_deft.protos.grpc_options import MEBIBYTE

if TYPE_CHECKING:
    from lola_deft.server.config import CoordinatorConfig
    from lola_deft.server.enrolment import Enrolment
    from lola_deft.server.runs import Run

HEAD_COMBINERS = ("mean", "median", "trimmed-mean")  # lola_deft.server.aggregation's


def add_coordinator_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("coordinator", help="the round coordinator (edge server)")
    commands = parser.add_subparsers(dest="coordinator_command", required=True)
    serve = commands.add_parser("serve", help="run rounds with the agents that register")
    add_config_argument(serve, "coordinator")
    serve.add_argument("--host", default="[::]", help="address to listen on ([::]: all)")
    serve.add_argument("--port", type=port, default=50052, help="gRPC port (0 picks a free one)")
    serve.add_argument(
        "--data-port",
        type=data_port,
        default="next",
        help="TCP port where weights and gradients travel as raw bytes, several times faster "
        "than gRPC streams, under the same TLS and checks: 'next' (default: --port + 1, or a "
        "free one when --port is 0), a number (0: a free one), or 'off' (all over gRPC)",
    )
    serve.add_argument("--scheduler", default="127.0.0.1:50051", help="scheduler HOST:PORT")
    add_policy_argument(serve)
    add_payload_arguments(serve)
    add_training_arguments(serve)
    serve.add_argument(
        "--bandwidth-hz",
        type=positive_float,
        default=100e6,
        help="uplink band B shared by the devices, in Hz",
    )
    serve.add_argument(
        "--prior-uplink-bps",
        type=positive_float,
        default=20e6,
        help="uplink rate, in bit/s, assumed for a --channel measured device before its first "
        "upload while no other device has measured one either",
    )
    serve.add_argument(
        "--min-agents",
        type=non_negative_int,
        default=0,
        help="agents the first round waits for (default: one per block); later rounds go on "
        "with fewer, rotating the blocks they train",
    )
    serve.add_argument(
        "--scheduler-timeout",
        type=positive_seconds,
        default=5.0,
        help="seconds an Allocate call may take before the round is solved in-process",
    )
    serve.add_argument(
        "--scheduler-retry",
        type=positive_seconds,
        default=30.0,
        help="while the scheduler is down, ask it again after this many seconds",
    )
    serve.add_argument(
        "--max-grad-norm",
        type=positive_float,
        default=1e6,
        help="refuse uploads with any tensor's L2 norm above this: a sanity bound far above "
        "honest gradients (the demo's largest upload norm is about 3)",
    )
    serve.add_argument(
        "--grad-norm-factor",
        type=positive_float,
        default=100.0,
        help="refuse uploads whose total L2 norm is above this many times the median of the "
        "last 32 accepted uploads' (after 5 accepted)",
    )
    serve.add_argument(
        "--head-aggregation",
        choices=HEAD_COMBINERS,
        default="mean",
        help="how the devices' head gradients are combined (median and trimmed-mean resist "
        "an outlier)",
    )
    serve.add_argument(
        "--report-wait",
        type=non_negative_float,
        default=2.0,
        help="seconds to wait for more reports once enough agents reported",
    )
    serve.add_argument(
        "--round-timeout",
        type=positive_seconds,
        default=300.0,
        help="seconds a round waits for its gradients",
    )
    serve.add_argument(
        "--holder-grace",
        type=positive_seconds,
        default=30.0,
        help="seconds a block holder has beyond 3x the latency its own report predicts; then "
        "its block goes to an idle device (at most --round-timeout)",
    )
    serve.add_argument(
        "--report-poll",
        type=positive_seconds,
        default=120.0,
        help="longest a resource report waits for its instruction before 'report again'",
    )
    serve.add_argument(
        "--liveness-timeout",
        type=liveness_seconds,
        default=10.0,
        help="seconds without a heartbeat (sent every 2 s) after which an agent counts as dead "
        "and its block is handed to another device",
    )
    serve.add_argument(
        "--forget-after",
        type=positive_seconds,
        default=600.0,
        help="seconds after its last call a departed device is dropped from the registry",
    )
    serve.add_argument(
        "--max-devices",
        type=positive_int,
        default=10_000,
        help="registered devices at most; more are refused (RESOURCE_EXHAUSTED)",
    )
    serve.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("deft-runs"),
        help="folder of runs, one subfolder each (run.json, checkpoints/, history.json). "
        "The newest unfinished run there is resumed; otherwise a new run starts beside the "
        "others (default: %(default)s)",
    )
    serve.add_argument(
        "--run-id",
        default=None,
        help="the run to resume, or the id of a new one (default: the newest unfinished run, "
        "or a new id from the date and time)",
    )
    runs = serve.add_mutually_exclusive_group()
    runs.add_argument(
        "--new-run",
        action="store_true",
        help="start a new run even if an unfinished one is there (it is kept, untouched)",
    )
    runs.add_argument(
        "--resume",
        action="store_true",
        help="only resume: refuse to start when there is no unfinished run",
    )
    serve.add_argument(
        "--history",
        type=Path,
        default=None,
        help="also write the round records to this JSON file (the run folder always has one)",
    )
    serve.add_argument(
        "--finish-grace",
        type=non_negative_float,
        default=60.0,
        help="after the last round, seconds to keep serving until every live agent has been "
        "told that training is over",
    )
    serve.add_argument(
        "--metrics-port", type=port, default=None, help="Prometheus /metrics port (default: none)"
    )
    serve.add_argument(
        "--metrics-host",
        default=None,
        help="address of the /metrics endpoint (default: the --host address)",
    )
    serve.add_argument(
        "--max-message-mb",
        type=positive_int,
        default=4,
        help="largest single message accepted (payloads travel as 1 MiB chunks)",
    )
    serve.add_argument(
        "--tc-shaping",
        metavar="PREFIX",
        default=None,
        help="testbed: shape agent aI's uplink (namespace PREFIX-aI) to B_k r_k every round",
    )
    serve.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    add_tls_arguments(serve, server=True)
    add_tls_arguments(serve, "--scheduler-tls", server=False, insecure=False)
    serve.add_argument(
        "--allowed-devices",
        type=Path,
        default=None,
        metavar="FILE",
        help="only device ids listed here (one a line) may join; re-read when it changes "
        "(`deft certs` keeps devices.txt). Default: any device certificate from --tls-ca",
    )
    serve.add_argument(
        "--revoked-certs",
        type=Path,
        default=None,
        metavar="FILE",
        help="SHA-256 fingerprints of certificates refused from now on; re-read when it "
        "changes (`deft certs revoke` keeps revoked.txt)",
    )
    serve.set_defaults(handler=run_coordinator)


def liveness_seconds(text: str) -> float:
    """At least 3 s: agents send a heartbeat every 2 s, and one late heartbeat is no death."""
    value = positive_seconds(text)
    if value < 3:
        raise argparse.ArgumentTypeError(
            f"must be >= 3 seconds (heartbeats every 2 s), got {text!r}"
        )
    return value


def _coordinator_errors() -> tuple[type[Exception], ...]:
    from lola_deft.server.runs import RunError
    from lola_deft.server.settings import SettingsError
    from lola_deft.server.training_state import CheckpointError

    return (*model_and_data_errors(), CheckpointError, RunError, SettingsError)


def _centralized_errors() -> tuple[type[Exception], ...]:
    from lola_deft.server.settings import SettingsError

    return (*model_and_data_errors(), SettingsError)


@user_errors("coordinator", _coordinator_errors)
def run_coordinator(args: argparse.Namespace) -> int:
    setup_logging()
    set_threads(args.threads)
    from lola_deft.server.config import CoordinatorConfig
    from lola_deft.server.enrolment import Enrolment
    from lola_deft.server.provenance import snapshot
    from lola_deft.server.runs import open_run

    tls = tls_from_args(args, role="deft coordinator")
    if not tls.enabled and (args.allowed_devices or args.revoked_certs):
        raise TlsConfigError(
            "--allowed-devices and --revoked-certs need device identities: drop --insecure"
        )
    enrolment = Enrolment(tls.enabled, args.allowed_devices, args.revoked_certs)

    config = CoordinatorConfig(
        **training_settings(args),
        rounds=args.rounds,
        policy=args.policy,
        scheduler_address=args.scheduler,
        bandwidth_hz=args.bandwidth_hz,
        prior_uplink_bps=args.prior_uplink_bps,
        min_agents=args.min_agents,
        report_wait_s=args.report_wait,
        round_timeout_s=args.round_timeout,
        holder_grace_s=args.holder_grace,
        report_poll_s=args.report_poll,
        forget_after_s=args.forget_after,
        liveness_timeout_s=args.liveness_timeout,
        max_devices=args.max_devices,
        scheduler_timeout_s=args.scheduler_timeout,
        scheduler_retry_s=args.scheduler_retry,
        max_grad_norm=args.max_grad_norm,
        grad_norm_factor=args.grad_norm_factor,
        head_aggregation=args.head_aggregation,
        upload_dtype=args.upload_dtype,
        head_training=args.head_training,
        head_warmup_rounds=args.head_warmup_rounds,
    )
    run = open_run(
        args.runs_dir,
        snapshot(config),
        run_id=args.run_id,
        new_run=args.new_run,
        must_resume=args.resume,
    )
    try:
        return _serve(args, config, run, tls, enrolment)
    finally:
        run.discard_if_empty()  # a failed start or a stop before round 1 leaves no run behind
        run.close()


def _serve(
    args: argparse.Namespace,
    config: CoordinatorConfig,
    run: Run,
    tls: TlsFiles,
    enrolment: Enrolment,
) -> int:
    from lola_deft.server.progress import print_baseline, print_round
    from lola_deft.server.service import start_coordinator

    config.checkpoint_dir = run.checkpoints
    config.resume = run.has_checkpoint
    config.history_paths = (run.history, *([args.history] if args.history else []))
    print(
        f"run {run.id} in {run.path}: "
        + ("resumed" if run.resumed else "new")
        + ("" if run.has_checkpoint or not run.resumed else " (no checkpoint yet: from round 1)"),
        flush=True,
    )
    running = start_coordinator(
        config,
        host=args.host,
        port=args.port,
        data_port=_data_port(args.data_port, args.port),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        max_message_bytes=args.max_message_mb * MEBIBYTE,
        on_round=lambda record: print_round(record, config.rounds),
        on_baseline=print_baseline,
        on_allocation=_shaper(args.tc_shaping),
        tls=tls,
        scheduler_tls=_scheduler_tls(args, tls),
        enrolment=enrolment,
    )
    run.started()
    stop = threading.Event()
    wait_for_signal(stop)  # before "listening": callers may signal right after reading it
    metrics = f", metrics on :{running.metrics_port}" if running.metrics_port else ""
    data = f", data on :{running.data_port}" if running.data_port else ", no data port"
    print(f"coordinator listening on {args.host}:{running.port}{data}{metrics}", flush=True)
    while not stop.is_set() and not running.engine.finished.is_set():
        stop.wait(0.5)
    if running.engine.finished.is_set() and not stop.is_set():
        missing = running.wait_for_farewells(args.finish_grace)
        if missing:
            print(f"agents that never heard the end of training: {sorted(missing)}", flush=True)
    running.stop()
    engine = running.engine
    print(f"coordinator stopped after {engine.completed} rounds", flush=True)
    if engine.error is not None:
        print(f"coordinator failed: {engine.error!r}", file=sys.stderr)
        return 1
    if engine.finished.is_set() and engine.completed >= config.rounds:
        run.finish(engine.completed)
        print(f"run {run.id} finished: {run.path}", flush=True)
    return 0


def data_port(text: str) -> int | str | None:
    """--data-port: "next", "off" or a port number."""
    if text in ("next", "off"):
        return text
    try:
        return port(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--data-port is 'next', 'off' or a port 0..65535, got {text!r}"
        ) from None


def _data_port(choice: int | str | None, grpc_port: int) -> int | None:
    if choice == "off":
        return None
    if choice == "next":
        return grpc_port + 1 if 0 < grpc_port < 65535 else 0
    assert isinstance(choice, int)
    return choice


def _scheduler_tls(args: argparse.Namespace, own: TlsFiles) -> TlsFiles:
    """--scheduler-tls-* when given, else the coordinator's own files (its certificate is a
    client certificate too); plaintext only on an --insecure coordinator."""
    files = TlsFiles(args.scheduler_tls_cert, args.scheduler_tls_key, args.scheduler_tls_ca)
    if files.enabled:
        return require_mutual(files, "--scheduler-tls", "the coordinator's scheduler link")
    return own


def _shaper(prefix: str | None) -> Callable[[dict[str, float]], None] | None:
    if prefix is None:
        return None
    from lola_deft.server.testbed.netns import Testbed, shape

    testbed = Testbed(prefix, agents=0)

    def apply(rates: dict[str, float]) -> None:
        for device, rate in rates.items():
            shape(testbed, testbed.index_of(device), rate)

    return apply


def add_centralized_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "centralized", help="fine-tune the same model and task in one process, for comparison"
    )
    add_config_argument(parser, "centralized")
    add_training_arguments(parser)
    parser.add_argument(
        "--steps", dest="rounds", type=positive_int, help="the same as --rounds: Adam steps"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the step records and the run's provenance as JSON (default: none)",
    )
    parser.set_defaults(handler=run_centralized)


@user_errors("centralized", _centralized_errors)
def run_centralized(args: argparse.Namespace) -> int:
    setup_logging()
    from lola_deft.server.centralized import CentralizedConfig, final_metric, train_centralized

    config = CentralizedConfig(**training_settings(args), steps=args.rounds)

    def show(record: dict[str, Any]) -> None:
        evaluation = record.get("eval")
        metric = f" | metric {evaluation['metric']:.4f}" if evaluation else ""
        print(
            f"step {record['step']:4d}/{config.steps} | loss {record['train_loss']:.4f}"
            f" | {record['seconds']:.2f} s{metric}",
            flush=True,
        )

    if config.method == "pac":
        from lola_deft.server.centralized_pac import train_centralized_pac

        print(f"PAC+: learning rate {config.learning_rate:g} (--lr to choose another)", flush=True)
        records = train_centralized_pac(config, on_step=show)
        passes = records[-1]["backbone_passes"]
        print(f"the backbone ran once for each of {passes} samples, never backward", flush=True)
    else:
        records = train_centralized(config, on_step=show)
    baseline = records[0]["eval"]
    print(
        f"metric ({baseline['metric_name']}) before: {baseline['metric']:.4f}  "
        f"after {config.steps} steps: {final_metric(records):.4f}"
    )
    if args.out:
        from lola_deft.server.provenance import provenance

        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {"provenance": provenance(config), "method": config.method, "steps": records}
        args.out.write_text(json.dumps(document, indent=1))
    return 0

"""`deft testbed`: the emulated multi-host wireless testbed (network namespaces and tc)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lola_deft.cli.common import add_policy_argument, positive_float, positive_int


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
            command.add_argument(
                "--agents", type=positive_int, default=3, help="agent namespaces (hosts)"
            )
        if name == "run":
            command.add_argument(
                "--rounds", type=positive_int, default=3, help="training rounds to measure"
            )
            command.add_argument(
                "--model",
                type=Path,
                default=None,
                help="local encoder directory (default: a small random encoder; the testbed "
                "measures upload times, not accuracy, so it takes no --data)",
            )
            command.add_argument(
                "--bandwidth-hz",
                type=positive_float,
                default=1e6,
                help="uplink band B shaped onto the links, in Hz",
            )
            command.add_argument(
                "--snr-db", type=float, default=20.0, help="agents' transmit SNR in dB"
            )
            command.add_argument(
                "--path-loss",
                type=positive_float,
                default=0.1,
                help="agents' mean path loss (power gain of the emulated fading channel)",
            )
            add_policy_argument(command)
            command.add_argument(
                "--json", type=Path, default=None, help="write the comparison (default: none)"
            )
        command.set_defaults(handler=run_testbed_command)


def run_testbed_command(args: argparse.Namespace) -> int:
    from lola_deft.server.testbed.netns import HOST_ADDRESS, Testbed, TestbedUnavailable, down, up

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
        from lola_deft.server.testbed.runner import TestbedConfig, format_report, run_testbed

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
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runner has stopped and removed everything
        print(
            "deft testbed: interrupted; its processes were stopped and the testbed removed",
            file=sys.stderr,
        )
        return 130
    except (RuntimeError, ValueError) as error:
        print(f"deft testbed: error: {error}", file=sys.stderr)
        return 1

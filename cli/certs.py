"""`deft certs`: what a testbed needs for mutual TLS, made on the edge server.

deft certs init   --out certs --server-name edge.lan --server-ip 192.168.1.10
deft certs device --out certs jetson-1 phone-1     (enrol; --force rotates a key)
deft certs revoke --out certs phone-1              (out of devices.txt, into revoked.txt)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lola_deft.cli.common import positive_int, user_errors


def add_certs_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="make the CA, server and device certificates for mutual TLS",
        description=__doc__,
    )
    commands = parser.add_subparsers(dest="certs_command", required=True)
    init = commands.add_parser("init", help="a new CA, the coordinator's and scheduler's certs")
    device = commands.add_parser("device", help="enrol devices: one certificate and key each")
    revoke = commands.add_parser("revoke", help="revoke devices' certificates")
    for command in (init, device, revoke):
        command.add_argument(
            "--out",
            type=Path,
            default=Path("certs"),
            help="the certificate folder (default: certs)",
        )
    init.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="DNS name agents use to reach the edge server (repeatable; localhost is included)",
    )
    init.add_argument(
        "--server-ip",
        action="append",
        default=[],
        help="IP address agents use to reach the edge server (repeatable; loopback included)",
    )
    init.add_argument(
        "--device", action="append", default=[], help="also enrol this device (repeatable)"
    )
    for command in (init, device):
        command.add_argument(
            "--days", type=positive_int, default=365, help="validity of the leaf certificates"
        )
        command.add_argument(
            "--force", action="store_true", help="replace existing files (a new CA, or rotation)"
        )
    device.add_argument("device_ids", nargs="+", metavar="DEVICE_ID", help="devices to enrol")
    revoke.add_argument("device_ids", nargs="+", metavar="DEVICE_ID", help="devices to revoke")
    parser.set_defaults(handler=run_certs)


def _errors() -> tuple[type[Exception], ...]:
    from lola_deft.server.pki import PkiError

    return PkiError, OSError


@user_errors("certs", _errors)
def run_certs(args: argparse.Namespace) -> int:
    from lola_deft.server import pki

    folder: Path = args.out
    written: list[Path] = []
    if args.certs_command == "init":
        if (folder / "ca.key").exists() and not args.force:
            raise pki.PkiError(
                f"{folder} already has a CA; `deft certs device` enrols more devices "
                "(--force makes a new CA and invalidates every certificate)"
            )
        written = pki.init_folder(
            folder,
            server_names=args.server_name,
            server_ips=args.server_ip,
            days=args.days,
            force=args.force,
            devices=args.device,
        )
    if args.certs_command == "device":
        written = pki.issue_devices(folder, args.device_ids, days=args.days, force=args.force)
    for path in written:
        print(f"wrote {path}")
    if args.certs_command == "revoke":
        for device_id in args.device_ids:
            fingerprint = pki.revoke_device(folder, device_id)
            print(f"revoked {device_id} (certificate sha256 {fingerprint[:16]}...)")
    print(
        f"give each device {folder}/ca.pem and its own {folder}/devices/<id>.pem and .key "
        "(keep ca.key here)",
        file=sys.stderr,
    )
    return 0

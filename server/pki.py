"""A testbed's certificates, made with the `cryptography` library: one CA, the coordinator's and
the scheduler's server certificates, one certificate and key per device, and the two lists the
coordinator reads to decide who may join (enrolled device ids) and which certificates no longer
count (revoked fingerprints).

Layout of the folder (keys are 0600, the folders holding them 0700):
    ca.pem ca.key                    the authority; keep ca.key off the network
    coordinator.pem coordinator.key  serverAuth + clientAuth (it calls the scheduler)
    scheduler.pem scheduler.key      serverAuth + clientAuth (for health probes)
    devices/<id>.pem devices/<id>.key  one per device, clientAuth
    devices.txt                      enrolled device ids (--allowed-devices)
    revoked.txt                      SHA-256 of revoked certificates (--revoked-certs)
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lola_deft.protos.identity import (
    COORDINATOR_URI,
    SCHEDULER_URI,
    certificate_fingerprint,
    device_uri,
)
from lola_deft.server.enrolment import read_list

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ALLOWED_FILE = "devices.txt"
REVOKED_FILE = "revoked.txt"


class PkiError(ValueError):
    """A request the folder cannot satisfy (no CA yet, a device that exists, a bad id)."""


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # small, fast, supported by every gRPC build


def _write(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Create with its final mode from the start: a key is never readable by others, not even
    for a moment between write and chmod."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, mode)
    except FileExistsError:
        raise PkiError(f"{path} exists; pass --force to replace it") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LoLa-DEFT testbed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: object, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def create_authority(days: int = 3650) -> Authority:
    key = _new_key()
    name = _name("LoLa-DEFT testbed CA")
    certificate = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, certificate)


def issue(
    authority: Authority,
    common_name: str,
    uri: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = 365,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate whose identity is `uri` (see lola_deft.protos.identity)."""
    key = _new_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    certificate = (
        _builder(_name(common_name), authority.certificate.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return key, certificate


def _save_pair(
    folder: Path,
    stem: str,
    key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    *,
    replace: bool,
) -> Path:
    _write(folder / f"{stem}.key", _key_pem(key), 0o600, replace=replace)
    _write(folder / f"{stem}.pem", _cert_pem(certificate), 0o644, replace=replace)
    return folder / f"{stem}.pem"


def load_authority(folder: Path) -> Authority:
    try:
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        certificate = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    except FileNotFoundError:
        raise PkiError(
            f"{folder} holds no CA (ca.pem, ca.key); run `deft certs init` first"
        ) from None
    except ValueError as error:
        raise PkiError(f"{folder}/ca.key or ca.pem is not a usable PEM file: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{folder}/ca.key is not an elliptic-curve key made by deft certs")
    return Authority(key, certificate)


def init_folder(
    folder: Path,
    *,
    server_names: Sequence[str] = (),
    server_ips: Sequence[str] = (),
    days: int = 365,
    force: bool = False,
    devices: Sequence[str] = (),
) -> list[Path]:
    """A new CA with the coordinator's and the scheduler's certificates, and the `devices`'
    (see issue_devices). Each server certificate is valid for localhost, 127.0.0.1, ::1 and
    the names and addresses given (the edge server's)."""
    for ip in server_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise PkiError(f"--server-ip: not an IP address: {ip!r}") from None
    check_device_ids(devices)  # before the CA is written: a typo leaves no half-made folder
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    authority = create_authority()
    _write(folder / "ca.key", _key_pem(authority.key), 0o600, replace=force)
    _write(folder / "ca.pem", _cert_pem(authority.certificate), 0o644, replace=True)
    dns = ["localhost", *server_names]
    ips = ["127.0.0.1", "::1", *server_ips]
    written = [folder / "ca.pem"]
    for stem, uri in (("coordinator", COORDINATOR_URI), ("scheduler", SCHEDULER_URI)):
        key, certificate = issue(
            authority,
            f"deft-{stem}",
            uri,
            dns_names=dns,
            ip_addresses=ips,
            server=True,
            client=True,
            days=days,
        )
        written.append(_save_pair(folder, stem, key, certificate, replace=True))
    for listing in (ALLOWED_FILE, REVOKED_FILE):
        (folder / listing).touch(mode=0o644)
    return written + issue_devices(folder, devices, days=days, force=force)


def check_device_ids(device_ids: Sequence[str]) -> None:
    for device_id in device_ids:
        if not DEVICE_ID.fullmatch(device_id):
            raise PkiError(
                f"device id {device_id!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )


def issue_devices(
    folder: Path, device_ids: Sequence[str], *, days: int = 365, force: bool = False
) -> list[Path]:
    """Each device's certificate and key (devices/<id>.pem, .key), enrolled in devices.txt. The
    CA is read once and devices.txt written once, however many devices (a 500-agent bench).
    With force, a new key replaces the old (rotation): revoke the old one first if it leaked.
    Every id is checked before anything is written."""
    check_device_ids(device_ids)
    authority = load_authority(folder)
    devices = folder / "devices"
    devices.mkdir(mode=0o700, exist_ok=True)
    if not force:
        for device_id in device_ids:
            if (devices / f"{device_id}.pem").exists():
                raise PkiError(
                    f"device {device_id} already has a certificate; pass --force to rotate it"
                )
    paths = []
    for device_id in device_ids:
        key, certificate = issue(
            authority, device_id, device_uri(device_id), client=True, days=days
        )
        paths.append(_save_pair(devices, device_id, key, certificate, replace=force))
    enrolled = set(read_list(folder / ALLOWED_FILE))
    new = [d for d in dict.fromkeys(device_ids) if d not in enrolled]
    with (folder / ALLOWED_FILE).open("a") as handle:
        handle.writelines(f"{device_id}\n" for device_id in new)
    return paths


def issue_device(folder: Path, device_id: str, *, days: int = 365, force: bool = False) -> Path:
    """One device's certificate (see issue_devices)."""
    return issue_devices(folder, [device_id], days=days, force=force)[0]


def revoke_device(folder: Path, device_id: str) -> str:
    """Take the device out of devices.txt and list its certificate's fingerprint in revoked.txt.
    Returns the fingerprint. The coordinator re-reads both files while it runs."""
    path = folder / "devices" / f"{device_id}.pem"
    try:
        fingerprint = certificate_fingerprint(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"no certificate for device {device_id!r} in {folder}/devices") from None
    allowed = folder / ALLOWED_FILE
    kept = [line for line in read_list(allowed) if line != device_id]
    allowed.write_text("".join(f"{line}\n" for line in kept))
    if fingerprint not in read_list(folder / REVOKED_FILE):
        with (folder / REVOKED_FILE).open("a") as handle:
            handle.write(f"{fingerprint}  # {device_id}\n")
    return fingerprint

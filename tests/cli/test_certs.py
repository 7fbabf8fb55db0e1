"""`deft certs`: a CA, server and device certificates, enrolment and revocation, safe modes."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from lola_deft.protos.identity import COORDINATOR_URI, certificate_fingerprint, device_uri
from tests.helpers import run_deft


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def uris(path: Path) -> list[str]:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def test_init_enrol_revoke_and_rotate(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = run_deft(
        "certs", "init", "--out", str(out), "--server-ip", "10.0.0.5", "--device", "jetson-1"
    )
    assert made.returncode == 0, made.stderr
    assert mode(out) == 0o700 and mode(out / "devices") == 0o700
    for key in (out / "ca.key", out / "coordinator.key", out / "devices" / "jetson-1.key"):
        assert mode(key) == 0o600, key
    assert mode(out / "ca.pem") == 0o644
    assert uris(out / "coordinator.pem") == [COORDINATOR_URI]
    assert uris(out / "devices" / "jetson-1.pem") == [device_uri("jetson-1")]
    server = x509.load_pem_x509_certificate((out / "coordinator.pem").read_bytes())
    addresses = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.5" in {str(ip) for ip in addresses.get_values_for_type(x509.IPAddress)}

    assert run_deft("certs", "device", "--out", str(out), "phone-1").returncode == 0
    assert (out / "devices.txt").read_text().split() == ["jetson-1", "phone-1"]
    again = run_deft("certs", "device", "--out", str(out), "phone-1")
    assert again.returncode == 2 and "--force to rotate" in again.stderr

    old = certificate_fingerprint((out / "devices" / "phone-1.pem").read_bytes())
    assert run_deft("certs", "revoke", "--out", str(out), "phone-1").returncode == 0
    assert (out / "devices.txt").read_text().split() == ["jetson-1"]
    assert old in (out / "revoked.txt").read_text()
    rotated = run_deft("certs", "device", "--out", str(out), "--force", "phone-1")
    assert rotated.returncode == 0
    new = certificate_fingerprint((out / "devices" / "phone-1.pem").read_bytes())
    assert new != old and "phone-1" in (out / "devices.txt").read_text().split()


def test_mistakes_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    missing = run_deft("certs", "device", "--out", str(out), "dev0")
    assert missing.returncode == 2 and "run `deft certs init` first" in missing.stderr
    assert not out.exists()
    assert run_deft("certs", "init", "--out", str(out)).returncode == 0
    ca = (out / "ca.pem").read_bytes()
    twice = run_deft("certs", "init", "--out", str(out))
    assert twice.returncode == 2 and "already has a CA" in twice.stderr
    assert (out / "ca.pem").read_bytes() == ca
    bad = run_deft("certs", "device", "--out", str(out), "../escape")
    assert bad.returncode == 2 and "device id '../escape'" in bad.stderr
    ip = run_deft("certs", "init", "--out", str(tmp_path / "x"), "--server-ip", "edge.lan")
    assert ip.returncode == 2 and "not an IP address" in ip.stderr
    typo = run_deft("certs", "init", "--out", str(tmp_path / "y"), "--device", "a b")
    assert typo.returncode == 2 and not (tmp_path / "y").exists()  # no half-made folder
    for result in (missing, twice, bad, ip, typo):
        assert "Traceback" not in result.stderr

"""TLS and mutual TLS on the gRPC links, with certificates made by openssl for the test."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from lola_deft.protos.credentials import TlsConfigError, TlsFiles
from lola_deft.protos.deft.v1 import scheduler_pb2
from lola_deft.scheduler.client import SchedulerClient
from lola_deft.scheduler.convert import request_from_instance_doc
from lola_deft.scheduler.service import start_scheduler
from tests.helpers import ROOT, run_deft

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
EXAMPLES = ROOT / "scheduler/examples"
EXAMPLE = (EXAMPLES / "paper_round.json").read_text()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=deft-test-ca",
        cwd=folder,
    )
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=folder,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            cwd=folder,
        )
    return folder


def allocate(port: int, tls: TlsFiles) -> int:
    # The stub directly (no wait_for_ready): a refused handshake should fail at once.
    with SchedulerClient(f"localhost:{port}", timeout_s=10, tls=tls) as client:
        request = request_from_instance_doc(json.loads(EXAMPLE))
        return len(client._stub.Allocate(request, timeout=10).assignment)


def test_tls_server_verified_by_the_client_ca(pki: Path) -> None:
    running = start_scheduler("localhost", 0, tls=TlsFiles(pki / "server.pem", pki / "server.key"))
    try:
        assert allocate(running.port, TlsFiles(ca=pki / "ca.pem")) == 12
        with pytest.raises(grpc.RpcError) as caught:
            allocate(running.port, TlsFiles())  # plaintext client: refused
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        health = run_deft(
            "health",
            f"localhost:{running.port}",
            "--service",
            "deft.v1.Scheduler",
            "--tls-cert",
            str(pki / "client.pem"),
            "--tls-key",
            str(pki / "client.key"),
            "--tls-ca",
            str(pki / "ca.pem"),
        )
        assert health.returncode == 0 and "SERVING" in health.stdout
    finally:
        running.stop(grace=None)


def test_mutual_tls_requires_a_client_certificate(pki: Path) -> None:
    running = start_scheduler(
        "localhost",
        0,
        tls=TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem"),
    )
    try:
        with pytest.raises(grpc.RpcError):
            allocate(running.port, TlsFiles(ca=pki / "ca.pem"))
        client = TlsFiles(pki / "client.pem", pki / "client.key", pki / "ca.pem")
        assert allocate(running.port, client) == 12
    finally:
        running.stop(grace=None)


def test_bad_tls_options_are_explained(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="go together"):
        TlsFiles(cert=tmp_path / "a.pem")
    with pytest.raises(TlsConfigError, match=r"cannot read the TLS (key|certificate)"):
        TlsFiles(tmp_path / "missing.pem", tmp_path / "missing.key").server_credentials()
    result = run_deft(
        "scheduler",
        "serve",
        "--port",
        "0",
        "--tls-cert",
        str(tmp_path / "x.pem"),
        "--tls-key",
        str(tmp_path / "x.key"),
        "--tls-ca",
        str(tmp_path / "ca.pem"),
    )
    assert result.returncode == 2 and "cannot read the TLS" in result.stderr


def test_the_scheduler_serves_only_the_coordinators_certificate(certs: Path) -> None:
    running = start_scheduler(
        "localhost",
        0,
        tls=TlsFiles(certs / "scheduler.pem", certs / "scheduler.key", certs / "ca.pem"),
        require_coordinator=True,
    )
    device = certs / "devices" / "dev0.pem"
    try:
        with pytest.raises(grpc.RpcError) as caught:
            allocate(running.port, TlsFiles(device, device.with_suffix(".key"), certs / "ca.pem"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        coordinator = TlsFiles(
            certs / "coordinator.pem", certs / "coordinator.key", certs / "ca.pem"
        )
        assert allocate(running.port, coordinator) == 12
        # PAC+'s plans are the coordinator's alone too.
        shares = json.loads((EXAMPLES / "pac_shares.json").read_text())
        shares.pop("plan")
        request = json_format.ParseDict(shares, scheduler_pb2.PlanSharesRequest())
        device_tls = TlsFiles(device, device.with_suffix(".key"), certs / "ca.pem")
        for tls, allowed in ((device_tls, False), (coordinator, True)):
            with SchedulerClient(f"localhost:{running.port}", tls=tls) as client:
                if allowed:
                    assert sum(s.samples for s in client.plan_shares(request).shares) == 256
                    continue
                with pytest.raises(grpc.RpcError) as refused:
                    client.plan_shares(request)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        running.stop(grace=None)

"""Device identity on the wire: only enrolled devices, each under its own certificate's id.

A coordinator with mutual TLS runs in this process; the test calls it with real certificates
from `deft certs` (ours, another CA's, the coordinator's own) and with none.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lola_deft.device_agent.data_link import DataLink, DataPortUnreachable
from lola_deft.ml.glue import EMBEDDED_TASK_DIR
from lola_deft.ml.model import model_fingerprint
from lola_deft.protos.credentials import TlsFiles, open_channel
from lola_deft.protos.deft.v1 import coordinator_pb2, coordinator_pb2_grpc
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.enrolment import Enrolment
from lola_deft.server.pki import issue_device, revoke_device
from lola_deft.server.service import RunningCoordinator, start_coordinator
from tests.helpers import eventually


def device_tls(folder: Path, device_id: str, ca: Path | None = None) -> TlsFiles:
    cert = folder / "devices" / f"{device_id}.pem"
    return TlsFiles(cert, cert.with_suffix(".key"), ca or folder / "ca.pem")


def outsider_tls(client: str, pki: Path, foreign_certs: Path) -> TlsFiles:
    return {
        "plaintext": TlsFiles(),
        # A certificate from another CA, for a device id we enrolled: the handshake fails.
        "foreign CA": device_tls(foreign_certs, "dev0", ca=pki / "ca.pem"),
        "no client certificate": TlsFiles(ca=pki / "ca.pem"),
    }[client]


@pytest.fixture
def pki(certs: Path, tmp_path: Path) -> Path:
    """A private copy of the session's certificate folder (tests enrol and revoke in it)."""
    return Path(shutil.copytree(certs, tmp_path / "certs"))


@pytest.fixture
def coordinator(tiny_model_dir: Path, tmp_path: Path, pki: Path) -> Iterator[RunningCoordinator]:
    config = CoordinatorConfig(
        model_dir=tiny_model_dir,
        data_dir=EMBEDDED_TASK_DIR,
        rounds=1,
        checkpoint_dir=tmp_path / "ck",
        liveness_timeout_s=120,
        scheduler_address="127.0.0.1:1",
    )
    tls = TlsFiles(pki / "coordinator.pem", pki / "coordinator.key", pki / "ca.pem")
    enrolment = Enrolment(True, pki / "devices.txt", pki / "revoked.txt")
    running = start_coordinator(config, host="127.0.0.1", port=0, tls=tls, enrolment=enrolment)
    yield running
    running.stop(grace=None)


def call_register(
    running: RunningCoordinator, tls: TlsFiles, device_id: str, model: Path
) -> coordinator_pb2.RegisterResponse:
    with open_channel(f"localhost:{running.port}", tls) as channel:
        return coordinator_pb2_grpc.CoordinatorStub(channel).Register(
            coordinator_pb2.RegisterRequest(
                device_id=device_id, model_fingerprint=model_fingerprint(model)
            ),
            timeout=10,
        )


def heartbeat(running: RunningCoordinator, tls: TlsFiles, session: str) -> int:
    with open_channel(f"localhost:{running.port}", tls) as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        return stub.SendHeartbeat(coordinator_pb2.Heartbeat(session=session), timeout=10).round


def refusal(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def registered(running: RunningCoordinator) -> set[str]:
    return running.call(lambda: {r.device_id for r in running.engine.registry.live()})


def test_a_device_registers_under_its_certificates_id_only(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    welcome = call_register(coordinator, device_tls(pki, "dev0"), "dev0", tiny_model_dir)
    assert welcome.session
    error = refusal(
        lambda: call_register(coordinator, device_tls(pki, "dev1"), "dev0", tiny_model_dir)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--id dev1" in error.details()
    # The impersonation evicted nobody: dev0's session still works, dev1 is not registered.
    assert heartbeat(coordinator, device_tls(pki, "dev0"), welcome.session) == 0
    assert registered(coordinator) == {"dev0"}


def test_another_devices_session_is_refused_and_names_no_one(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    session = call_register(coordinator, device_tls(pki, "dev0"), "dev0", tiny_model_dir).session
    error = refusal(lambda: heartbeat(coordinator, device_tls(pki, "dev1"), session))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "dev0" not in error.details()


@pytest.mark.parametrize("client", ["plaintext", "foreign CA", "no client certificate"])
def test_clients_without_our_certificates_cannot_connect(
    coordinator: RunningCoordinator,
    pki: Path,
    foreign_certs: Path,
    tiny_model_dir: Path,
    client: str,
) -> None:
    tls = outsider_tls(client, pki, foreign_certs)
    error = refusal(lambda: call_register(coordinator, tls, "dev0", tiny_model_dir))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert registered(coordinator) == set()


def test_a_certificate_that_names_no_device_is_unauthenticated(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    own = TlsFiles(pki / "coordinator.pem", pki / "coordinator.key", pki / "ca.pem")
    error = refusal(lambda: call_register(coordinator, own, "dev0", tiny_model_dir))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert registered(coordinator) == set()


def test_only_enrolled_devices_join_and_revocation_takes_effect_without_restart(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    # A CA-issued certificate that is not in devices.txt (enrolled by hand, then removed).
    issue_device(pki, "stranger")
    (pki / "devices.txt").write_text("dev0\ndev1\n")
    error = refusal(
        lambda: call_register(coordinator, device_tls(pki, "stranger"), "stranger", tiny_model_dir)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not enrolled" in error.details()
    session = call_register(coordinator, device_tls(pki, "dev1"), "dev1", tiny_model_dir).session
    revoke_device(pki, "dev1")

    def refused() -> bool:
        try:
            heartbeat(coordinator, device_tls(pki, "dev1"), session)
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.PERMISSION_DENIED
        return False

    assert eventually(refused, timeout=10)  # the lists are re-read within a second


def test_a_revoked_certificate_stays_refused_after_rotation_of_others(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    old = device_tls(pki, "dev2")
    old_copy = pki / "old-dev2.pem"
    shutil.copy(old.cert, old_copy)  # type: ignore[arg-type]
    shutil.copy(old.key, old_copy.with_suffix(".key"))  # type: ignore[arg-type]
    revoke_device(pki, "dev2")
    issue_device(pki, "dev2", force=True)  # rotation: a new key for the same device
    rotated = call_register(coordinator, device_tls(pki, "dev2"), "dev2", tiny_model_dir)
    assert rotated.session
    leaked = TlsFiles(old_copy, old_copy.with_suffix(".key"), pki / "ca.pem")
    error = refusal(lambda: call_register(coordinator, leaked, "dev2", tiny_model_dir))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in error.details()


def test_another_certificate_for_a_live_device_waits_and_evicts_no_one(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    first = call_register(coordinator, device_tls(pki, "dev3"), "dev3", tiny_model_dir)
    kept = pki / "first-dev3.pem"
    shutil.copy(pki / "devices" / "dev3.pem", kept)
    shutil.copy(pki / "devices" / "dev3.key", kept.with_suffix(".key"))
    issue_device(pki, "dev3", force=True)  # a second, valid certificate for the same id
    error = refusal(
        lambda: call_register(coordinator, device_tls(pki, "dev3"), "dev3", tiny_model_dir)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    original = TlsFiles(kept, kept.with_suffix(".key"), pki / "ca.pem")
    assert heartbeat(coordinator, original, first.session) == 0  # still registered
    again = call_register(coordinator, original, "dev3", tiny_model_dir)  # the same certificate
    assert again.session != first.session  # restarting under its own certificate is fine


def test_a_session_serves_only_the_certificate_that_opened_it(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    kept = pki / "first-dev2.pem"
    first = call_register(coordinator, device_tls(pki, "dev2"), "dev2", tiny_model_dir)
    shutil.copy(pki / "devices" / "dev2.pem", kept)
    shutil.copy(pki / "devices" / "dev2.key", kept.with_suffix(".key"))
    issue_device(pki, "dev2", force=True)  # a second, valid certificate for the same id
    error = refusal(lambda: heartbeat(coordinator, device_tls(pki, "dev2"), first.session))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "another certificate" in error.details()
    original = TlsFiles(kept, kept.with_suffix(".key"), pki / "ca.pem")
    assert heartbeat(coordinator, original, first.session) == 0  # its owner is unaffected


def data_download(running: RunningCoordinator, tls: TlsFiles, session: str) -> None:
    link = DataLink("localhost", running.data_port or 0, tls)
    link.download(coordinator_pb2.WeightsRequest(session=session, round=1), timeout_s=10)


def test_the_data_port_knows_devices_by_their_certificates_too(
    coordinator: RunningCoordinator, pki: Path, tiny_model_dir: Path
) -> None:
    session = call_register(coordinator, device_tls(pki, "dev0"), "dev0", tiny_model_dir).session
    stolen = refusal(lambda: data_download(coordinator, device_tls(pki, "dev1"), session))
    assert stolen.code() == grpc.StatusCode.PERMISSION_DENIED
    # Its owner gets past identity to the round's own answer (no round runs here).
    own = refusal(lambda: data_download(coordinator, device_tls(pki, "dev0"), session))
    assert own.code() == grpc.StatusCode.FAILED_PRECONDITION, own.details()


@pytest.mark.parametrize("client", ["plaintext", "foreign CA", "no client certificate"])
def test_the_data_port_refuses_clients_without_our_certificates(
    coordinator: RunningCoordinator, pki: Path, foreign_certs: Path, client: str
) -> None:
    tls = outsider_tls(client, pki, foreign_certs)
    with pytest.raises(DataPortUnreachable):
        data_download(coordinator, tls, "any")

"""The committed stubs are exactly what `make protos` generates from the .proto files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (make pythons): pytest's own dependency
    import tomli as tomllib

# Generated through the link lola_deft/protos, so the stubs import lola_deft.protos.deft.v1.
PROTO_DIR = ROOT / "lola_deft" / "protos" / "deft" / "v1"
PROTOS_PYTHON = ROOT / ".venv-protos" / "bin" / "python"  # grpcio-tools at the grpcio floor


def generate(python: str, out: Path, *kinds: str) -> dict[str, bytes]:
    """Runs protoc (grpc_tools of `python`) on the .proto files; returns the files it wrote."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            python,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT),
            *(f"--{kind}_out={out}" for kind in kinds),
            *(str(p.relative_to(ROOT)) for p in protos),
        ],
        check=True,
        cwd=ROOT,
    )
    folder = out / "lola_deft" / "protos" / "deft" / "v1"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def committed(suffix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(PROTO_DIR.glob(f"*{suffix}"))}


def grpc_floor() -> str:
    """The oldest grpcio the agent supports, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [floor] = [d.split(">=")[1] for d in project["dependencies"] if d.startswith("grpcio>=")]
    return floor


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed"
)
def test_committed_messages_match_the_proto_files(tmp_path: Path) -> None:
    generated = generate(sys.executable, tmp_path, "python", "pyi")
    stored = {**committed("_pb2.py"), **committed("_pb2.pyi")}
    assert sorted(generated) == sorted(stored)
    stale = [name for name in generated if generated[name] != stored[name]]
    assert not stale, f"stubs differ from the .proto files, run `make protos`: {stale}"


@pytest.mark.skipif(
    not PROTOS_PYTHON.is_file(), reason="no .venv-protos (make protos and make test build it)"
)
def test_committed_services_come_from_the_oldest_supported_grpc(tmp_path: Path) -> None:
    """The service stubs refuse (or warn about) a grpcio older than the grpcio-tools that made
    them: they are generated with the oldest grpcio the agent supports, so a Termux or Jetson
    grpcio of that age imports them."""
    generated = generate(str(PROTOS_PYTHON), tmp_path, "grpc_python")
    stored = committed("_pb2_grpc.py")
    assert sorted(generated) == sorted(stored)
    stale = [name for name in generated if generated[name] != stored[name]]
    assert not stale, f"service stubs differ, run `make protos`: {stale}"


def test_service_stubs_accept_every_supported_grpcio() -> None:
    floor = grpc_floor()
    for name, text in committed("_pb2_grpc.py").items():
        assert f"GRPC_GENERATED_VERSION = '{floor}'" in text.decode(), name
    makefile = (ROOT / "Makefile").read_text()
    assert f"GRPC_FLOOR := {floor}" in makefile
    oldest = (ROOT / "constraints" / "oldest.txt").read_text().splitlines()
    assert f"grpcio=={floor}" in oldest


def test_both_services_are_in_one_versioned_package() -> None:
    from lola_deft.protos.deft.v1 import coordinator_pb2, scheduler_pb2

    assert scheduler_pb2.DESCRIPTOR.package == "deft.v1"
    assert coordinator_pb2.DESCRIPTOR.package == "deft.v1"
    assert set(scheduler_pb2.DESCRIPTOR.services_by_name) == {"Scheduler"}
    assert set(coordinator_pb2.DESCRIPTOR.services_by_name) == {"Coordinator"}

"""The committed stubs are exactly what `make protos` generates from the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

# Generated through the link lola_deft/protos, so the stubs import lola_deft.protos.deft.v1.
PROTO_DIR = ROOT / "lola_deft" / "protos" / "deft" / "v1"


def test_committed_stubs_match_the_proto_files(tmp_path: Path) -> None:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *(str(p.relative_to(ROOT)) for p in protos),
        ],
        check=True,
        cwd=ROOT,
    )
    generated = sorted((tmp_path / "lola_deft" / "protos" / "deft" / "v1").iterdir())
    committed = sorted(p for p in PROTO_DIR.iterdir() if "_pb2" in p.name)
    assert [p.name for p in generated] == [p.name for p in committed]
    stale = [p.name for p in generated if p.read_bytes() != (PROTO_DIR / p.name).read_bytes()]
    assert not stale, f"stubs differ from the .proto files, run `make protos`: {stale}"


def test_both_services_are_in_one_versioned_package() -> None:
    from lola_deft.protos.deft.v1 import coordinator_pb2, scheduler_pb2

    assert scheduler_pb2.DESCRIPTOR.package == "deft.v1"
    assert coordinator_pb2.DESCRIPTOR.package == "deft.v1"
    assert set(scheduler_pb2.DESCRIPTOR.services_by_name) == {"Scheduler"}
    assert set(coordinator_pb2.DESCRIPTOR.services_by_name) == {"Coordinator"}

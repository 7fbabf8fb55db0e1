"""The coordinator's layers: only the wire modules know gRPC and protobuf."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).parents[2] / "server"
WIRE = {
    "service.py",
    "service_status.py",
    "data_port.py",
    "wire.py",
    "allocator.py",
    "fake_agent.py",
    "bench.py",
    "stream_bench.py",
    "load_bench.py",
}
WIRE_DIRS = {"testbed"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_grpc_or_protobuf_below_the_wire_layer() -> None:
    checked = []
    for path in sorted(SERVER.rglob("*.py")):
        if path.name in WIRE or WIRE_DIRS & set(path.relative_to(SERVER).parts):
            continue
        wire = {
            name
            for name in imported_modules(path)
            if name.split(".")[0] in ("grpc", "grpc_health", "google")
            or "deft.v1" in name
            or name.endswith("tensor_stream")
        }
        assert not wire, f"{path.name} imports {sorted(wire)}"
        checked.append(path.name)
    assert {"engine.py", "coordinator.py", "registry.py", "aggregation.py"} <= set(checked)


def test_the_engine_does_not_even_load_grpc() -> None:
    """Not directly, and not through anything it imports."""
    import subprocess
    import sys

    code = (
        "import sys; import lola_deft.server.engine, lola_deft.server.coordinator; "
        "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'google.protobuf'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

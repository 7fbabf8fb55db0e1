"""An agent-only install has no scipy: `deft agent` must not need it."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

BLOCK_SCIPY = "import sys; sys.modules['scipy'] = None; "


def test_agent_command_works_without_scipy() -> None:
    code = (
        BLOCK_SCIPY
        + "from server.cli import main; import device_agent.agent; main(['agent', '--help'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "--coordinator" in result.stdout


def test_scipy_block_is_effective() -> None:
    code = BLOCK_SCIPY + "import scheduler.policies"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "scipy" in result.stderr

"""Run `deft demo` as a child process and read its summary: what `make bench` and
`deft reproduce` build their training runs from."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class DemoFailed(RuntimeError):
    """A demo run ended with an error; the message carries its last output lines."""


def run_demo(out: Path, *flags: str) -> tuple[dict[str, Any], float]:
    """One `deft demo --out OUT FLAGS...`: its metrics JSON (with the run's `history` path)
    and its wall seconds."""
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-m", "lola_deft.cli.main", "demo", "--out", str(out), *flags],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        tail = (finished.stderr or finished.stdout).strip().splitlines()[-3:]
        raise DemoFailed(f"deft demo {' '.join(flags)} failed: {' / '.join(tail)}")
    # Each demo is a run folder of its own; the demo names its metrics JSON.
    [metrics] = re.findall(r"^metrics JSON: (.+)$", finished.stdout, re.MULTILINE)
    return json.loads(Path(metrics).read_text()), seconds

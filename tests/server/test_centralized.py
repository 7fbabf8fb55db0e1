"""`deft centralized`: the single-process baseline trains and reports the same metric."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_deft


def test_centralized_trains_and_writes_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "central.json"
    result = run_deft(
        "centralized",
        "--model",
        str(tiny_model_dir),
        "--steps",
        "3",
        "--lr",
        "1e-2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "metric (accuracy) before:" in result.stdout
    records = json.loads(out.read_text())
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert all("eval" in r for r in records)
    assert records[1]["train_loss"] > 0

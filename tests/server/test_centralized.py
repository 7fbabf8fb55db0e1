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
    document = json.loads(out.read_text())
    records = document["steps"]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert document["provenance"]["config"]["learning_rate"] == 1e-2
    assert document["provenance"]["model"]["name"] == tiny_model_dir.name
    assert all("eval" in r for r in records)
    assert records[1]["train_loss"] > 0

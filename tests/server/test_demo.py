"""`deft demo` launches every role as a process and writes its summary, plot and adapter."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_deft


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_deft(
        "demo",
        "--model",
        str(tiny_model_dir),
        "--agents",
        "4",
        "--rounds",
        "3",
        "--out",
        str(out),
        "--lr",
        "1e-2",
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "baseline  | dev accuracy" in result.stdout
    assert result.stdout.count("round ") >= 3
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["rounds"] == 3 and summary["agents"] == 4
    assert 0 <= summary["metric_before"] <= 1 and 0 <= summary["metric_after"] <= 1
    assert (Path(summary["adapter"]) / "adapter_config.json").is_file()
    assert (out / "demo.png").stat().st_size > 1000
    assert f"adapter (peft format): {summary['adapter']}" in result.stdout


def test_demo_refuses_too_few_agents_for_the_blocks(tiny_model_dir: Path) -> None:
    result = run_deft("demo", "--model", str(tiny_model_dir), "--agents", "2")
    assert result.returncode == 2
    assert "the model has 3 LoRA blocks" in result.stderr and "--agents 3" in result.stderr


def test_a_stopped_demo_stops_every_process_it_started_first(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import signal

    import psutil

    from tests.helpers import start_deft

    out = tmp_path / "demo"
    demo, _ = start_deft(
        "demo",
        "--model",
        str(tiny_model_dir),
        "--agents",
        "3",
        "--rounds",
        "500",
        "--out",
        str(out),
        ready=r"starting 3 agents",
        timeout=120,
    )
    children = psutil.Process(demo.pid).children(recursive=True)
    assert len(children) >= 4  # the scheduler, the coordinator, the agents (some may start)
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=60) == 130  # "interrupted", after its processes were stopped
    still = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert still == [], [c.cmdline()[-6:] for c in still]

"""`deft demo` launches every role as a process and writes its summary, plot and adapter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.helpers import run_deft


def run_demo(out: Path, model: Path, rounds: int) -> tuple[str, dict[str, Any]]:
    return run_demo_with(
        out, "--model", str(model), "--agents", "4", "--rounds", str(rounds), "--lr", "1e-2"
    )


def run_demo_with(out: Path, *flags: str) -> tuple[str, dict[str, Any]]:
    result = run_deft("demo", *flags, "--out", str(out), timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^metrics JSON: (.+)$", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    return result.stdout, json.loads(Path(match.group(1)).read_text())


def test_demo_runs_end_to_end_and_keeps_earlier_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    stdout, summary = run_demo(out, tiny_model_dir, rounds=3)
    assert "baseline  | dev accuracy" in stdout
    assert "the embedded sst2-mini task, synthetic" in stdout
    assert stdout.count("round ") >= 3
    assert summary["rounds"] == 3 and summary["agents"] == 4
    assert 0 <= summary["metric_before"] <= 1 and 0 <= summary["metric_after"] <= 1
    first_adapter = Path(summary["adapter"])
    assert (first_adapter / "adapter_config.json").is_file()
    first_run = first_adapter.parents[2]  # runs/<id>/checkpoints/round-N/adapter
    assert first_run.parent == out / "runs"
    assert (first_run / "demo.png").stat().st_size > 1000
    assert (first_run / "demo.pdf").read_bytes().startswith(b"%PDF")
    assert f"adapter (peft format, with tokenizer and model card): {summary['adapter']}" in stdout
    assert (first_adapter / "README.md").is_file() and (first_adapter / "tokenizer.json").is_file()
    # Agent start-up is shown as it happens, then the rounds.
    assert stdout.index("agent-0: profiling 3 blocks") < stdout.index("round   1/3")
    assert "agent-3: registered" in stdout
    # The outputs say how they were made.
    provenance = summary["provenance"]
    assert provenance["config"]["learning_rate"] == 1e-2 and provenance["seed"] == 0
    assert provenance["model"]["name"] == tiny_model_dir.name  # a name, not a path
    assert provenance["versions"]["lola-deft"]
    history = json.loads((first_run / "history.json").read_text())
    assert history["provenance"] == provenance
    latest = (first_run / "checkpoints" / "LATEST").read_text().strip()
    state = json.loads((first_run / "checkpoints" / latest / "state.json").read_text())
    assert state["extra"]["provenance"] == provenance  # the checkpoint says it too
    run_file = first_run / "run.toml"
    assert f"settings: built-in defaults (+ flags); resolved in {run_file}" in stdout
    weights = (first_adapter / "adapter_model.safetensors").read_bytes()

    # The run file reproduces the first run's settings (here with one round instead).
    _, second = run_demo_with(out, "--config", str(run_file), "--rounds", "1")
    assert second["provenance"]["config"]["learning_rate"] == 1e-2
    assert second["config_file"] == str(run_file)
    second_run = Path(second["adapter"]).parents[2]
    assert second_run != first_run and second_run.parent == out / "runs"
    # The first run is untouched: same adapter bytes, still finished, history of 3 rounds.
    assert (first_adapter / "adapter_model.safetensors").read_bytes() == weights
    assert json.loads((first_run / "run.json").read_text())["status"] == "finished"
    assert len(json.loads((first_run / "history.json").read_text())["rounds"]) == 3
    assert second["rounds"] == 1


def test_a_pac_demo_trains_the_side_network_with_any_number_of_agents(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    flags = ("--model", str(tiny_model_dir), "--agents", "2", "--rounds", "2", "--method", "pac")
    stdout, summary = run_demo_with(out, *flags)
    assert summary["method"] == "pac" and summary["rounds"] == 2
    assert summary["provenance"]["config"]["learning_rate"] == 1e-3  # PAC's own default
    adapter = Path(summary["adapter"])
    assert (adapter / "parallel_adapters.safetensors").is_file()
    form = "parallel adapters: load_adapters(folder), with tokenizer and model card"
    assert f"adapter ({form}): {adapter}" in stdout
    assert "agent-1: loading the backbone" in stdout
    assert len([p for p in (out / "activations").iterdir() if p.is_dir()]) == 2  # one per shard
    logs = "".join(path.read_text() for path in (out / "logs").rglob("*.log"))
    assert logs.count("weights and gradients over the data port") == 2
    assert "go over gRPC instead" not in logs  # no agent fell back from the data port
    assert "Traceback" not in logs


def test_a_failed_demo_process_is_named_with_its_own_error(tmp_path: Path) -> None:
    result = run_deft("demo", "--model", str(tmp_path), "--out", str(tmp_path / "demo"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("deft demo: error: coordinator exited with status 2 before it was ")
    assert f"{tmp_path}: not a model directory (no config.json)" in line
    assert "Traceback" not in result.stderr


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

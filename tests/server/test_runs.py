"""Run folders: a run is never lost, overwritten, restarted once finished, or shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lola_deft.server.runs import FINISHED, RUNNING, Run, RunError, list_runs, open_run
from lola_deft.server.training_state import read_checkpoint
from tests.server.test_training_state import fake_gradients, make_state

CONFIG: dict[str, Any] = {
    "task": "sst2",
    "model_dir": "/models/minilm",
    "lora": {"rank": 8, "alpha": 16.0, "targets": ["query", "value"]},
    "max_seq_length": 48,
    "rounds": 20,
    "learning_rate": 5e-4,
}


def checkpointed(run: Run) -> Run:
    """As if the run had saved a round (only LATEST matters to the run folder)."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    (run.checkpoints / "LATEST").write_text("round-000001\n")
    return run


def test_a_new_run_has_an_id_a_folder_and_a_snapshot_of_its_settings(tmp_path: Path) -> None:
    run = open_run(tmp_path, CONFIG)
    try:
        document = json.loads((run.path / "run.json").read_text())
        assert run.path.parent == tmp_path and run.path.name == run.id == document["id"]
        assert document["status"] == RUNNING and document["config"] == CONFIG
        assert {"python", "torch", "grpcio"} <= set(document["versions"])
        assert not run.resumed and not run.has_checkpoint
    finally:
        run.close()


def test_an_unfinished_run_is_resumed_by_default(tmp_path: Path) -> None:
    first = open_run(tmp_path, CONFIG)
    first.close()  # as if the coordinator was killed
    again = open_run(tmp_path, {**CONFIG, "rounds": 30})  # the budget may change
    try:
        assert again.resumed and again.path == first.path
        assert again.document["config"]["rounds"] == 30
        assert len(list_runs(tmp_path)) == 1
    finally:
        again.close()


def test_a_finished_run_is_kept_and_the_next_start_is_a_new_run(tmp_path: Path) -> None:
    first = open_run(tmp_path, CONFIG)
    first.finish(rounds_done=20)
    first.close()
    second = open_run(tmp_path, CONFIG)
    second.close()
    assert second.path != first.path and not second.resumed
    assert json.loads((first.path / "run.json").read_text())["status"] == FINISHED
    with pytest.raises(RunError, match="finished after 20 rounds and is kept"):
        open_run(tmp_path, CONFIG, run_id=first.id)
    with pytest.raises(RunError, match="finished after 20 rounds and is kept"):
        open_run(tmp_path, CONFIG, run_id=first.id, must_resume=True)


def test_a_run_of_other_settings_is_refused_not_overwritten(tmp_path: Path) -> None:
    first = checkpointed(open_run(tmp_path, CONFIG))
    first.close()
    before = (first.path / "run.json").read_text()
    with pytest.raises(RunError) as refused:
        open_run(tmp_path, {**CONFIG, "task": "cola"})
    message = str(refused.value)
    assert "task 'sst2' (now 'cola')" in message and "--new-run" in message
    assert (first.path / "run.json").read_text() == before  # unchanged
    beside = open_run(tmp_path, {**CONFIG, "task": "cola"}, new_run=True)
    beside.close()
    assert beside.path != first.path and len(list_runs(tmp_path)) == 2


def test_two_coordinators_never_share_a_run(tmp_path: Path) -> None:
    first = open_run(tmp_path, CONFIG)
    try:
        with pytest.raises(RunError, match="in use by another coordinator"):
            open_run(tmp_path, CONFIG)
        other = open_run(tmp_path, CONFIG, new_run=True)
        other.close()
        assert other.path != first.path
    finally:
        first.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"must_resume": True}, "no unfinished run to resume"),
        ({"run_id": "../escape"}, "--run-id '../escape': use 1 to 64 letters"),
        ({"run_id": ".hidden"}, "--run-id '.hidden'"),
        ({"new_run": True, "must_resume": True}, "contradict"),
    ],
)
def test_bad_requests_change_nothing(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RunError, match=message):
        open_run(tmp_path / "runs", CONFIG, **kwargs)
    assert not (tmp_path / "runs").exists()  # a refused request creates nothing


def test_a_named_run_is_created_then_resumed(tmp_path: Path) -> None:
    run = open_run(tmp_path, CONFIG, run_id="exp-1")
    run.close()
    assert run.path == tmp_path / "exp-1"
    with pytest.raises(RunError, match="a run with this id exists"):
        open_run(tmp_path, CONFIG, run_id="exp-1", new_run=True)
    again = open_run(tmp_path, CONFIG, run_id="exp-1")
    again.close()
    assert again.resumed


def test_pruning_in_one_run_never_touches_another(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each run keeps its own last two checkpoints: a new run saving round 1, 2, 3 leaves an
    earlier run's higher-numbered checkpoints (and its LATEST) as they were."""
    old = open_run(tmp_path, CONFIG)
    state = make_state(tiny_model_dir)
    for number in range(1, 6):
        state.apply(fake_gradients(state, [1], seed=number))
        state.round = number
        state.save(old.checkpoints)
    old.close()
    kept = sorted(p.name for p in old.checkpoints.glob("round-*"))
    assert kept == ["round-000004", "round-000005"]

    new = open_run(tmp_path, CONFIG, new_run=True)
    fresh = make_state(tiny_model_dir)
    for number in range(1, 4):
        fresh.round = number
        fresh.save(new.checkpoints)
    new.close()
    assert sorted(p.name for p in old.checkpoints.glob("round-*")) == kept
    assert (old.checkpoints / "LATEST").read_text().strip() == "round-000005"
    assert read_checkpoint(old.checkpoints / "round-000005")["round"] == 5
    assert (new.checkpoints / "LATEST").read_text().strip() == "round-000003"


def test_a_run_without_a_checkpoint_is_discarded_and_blocks_nothing(tmp_path: Path) -> None:
    """A start that failed, or a coordinator stopped before round 1, leaves no run behind; one
    killed before its first checkpoint does not block a start with other settings."""
    failed = open_run(tmp_path, CONFIG)
    assert failed.discard_if_empty() and not failed.path.exists()
    failed.close()

    killed = open_run(tmp_path, CONFIG)
    killed.close()  # SIGKILL: no checkpoint, no discard
    other = open_run(tmp_path, {**CONFIG, "task": "cola"})
    other.close()
    assert not other.resumed and other.path != killed.path

    resumed = open_run(tmp_path, CONFIG, run_id=killed.id)
    before = (killed.path / "run.json").read_text()
    resumed.close()  # its start failed: run.json is as it was
    assert (killed.path / "run.json").read_text() == before

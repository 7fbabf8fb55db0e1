"""Run folders: every coordinator run has an id and a folder of its own, so no run is lost.

    <runs-dir>/<run-id>/run.json        id, status, configuration snapshot, package versions
    <runs-dir>/<run-id>/checkpoints/    round-NNNNNN/ folders and LATEST (pruned within the run)
    <runs-dir>/<run-id>/history.json    the round records

A coordinator started on a runs folder resumes its newest unfinished run by default (a crash, a
SIGKILL or a container restart loses nothing) and starts a new run beside the others when none
is unfinished or when asked (`--new-run`). A run it cannot continue (another task, model or LoRA
setup) is refused with the difference named, never overwritten. A run is "finished" only once
its last round is checkpointed; each run holds an exclusive lock while a coordinator works on
it, so two coordinators never write the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from lola_deft.server.provenance import package_versions

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUNNING = "running"
FINISHED = "finished"
# Settings a run cannot change half-way: the checkpoints would not fit them.
IDENTITY_KEYS = ("task", "model_dir", "lora", "max_seq_length")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message says what to do instead."""


@dataclass
class Run:
    """One run's folder, held (locked) by this process until close()."""

    path: Path
    document: dict[str, Any]
    resumed: bool
    _lock: TextIO | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return str(self.document["id"])

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history(self) -> Path:
        return self.path / "history.json"

    @property
    def has_checkpoint(self) -> bool:
        return (self.checkpoints / "LATEST").is_file()

    def started(self) -> None:
        """The coordinator is serving: a resumed run records it (and the settings it resumed
        with) only now, so a start that failed left run.json as it was."""
        if self.resumed:
            self.document.setdefault("resumes", []).append(_now())
            _write_json(self.path / RUN_FILE, self.document)

    def discard_if_empty(self) -> bool:
        """Removes the run if it holds no checkpoint (a start that failed, or a stop before the
        first round): nothing is lost, and it does not stand in the way of the next start."""
        if self.has_checkpoint or not self.path.is_dir():
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):  # the runs folder too, if this run was all it held
            self.path.parent.rmdir()
        return True

    def finish(self, rounds_done: int) -> None:
        """Marks the run finished: from now on it is kept, never resumed or restarted."""
        self.document.update(status=FINISHED, finished=_now(), rounds_done=rounds_done)
        _write_json(self.path / RUN_FILE, self.document)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


def open_run(
    runs_dir: Path,
    config: dict[str, Any],
    *,
    run_id: str | None = None,
    new_run: bool = False,
    must_resume: bool = False,
) -> Run:
    """The run a coordinator works on: the named one, else the newest unfinished one, else a
    new one (always a new one with new_run). RunError, with nothing changed, when the run
    cannot be used: finished, locked by another coordinator, or of other settings."""
    if new_run and must_resume:
        raise RunError("--new-run and --resume contradict each other: pick one")
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise RunError(
            f"--run-id {run_id!r}: use 1 to 64 letters, digits, '.', '_' or '-' "
            "(not starting with '.', '_' or '-')"
        )
    if runs_dir.exists() and not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: not a folder (--runs-dir)")
    if run_id is not None and (runs_dir / run_id).exists():
        if new_run:
            raise RunError(f"{runs_dir / run_id}: a run with this id exists; pick another --run-id")
        return _resume(runs_dir / run_id, config)
    if run_id is None and not new_run:
        unfinished = [info for info in list_runs(runs_dir) if info.get("status") != FINISHED]
        if unfinished:
            newest = Path(unfinished[-1]["path"])
            # A run killed before its first checkpoint holds nothing to resume: one of other
            # settings is no reason to refuse (a new run starts beside it).
            if (newest / "checkpoints" / "LATEST").is_file() or not _differences(
                unfinished[-1], config
            ):
                return _resume(newest, config)
    if must_resume:
        where = runs_dir / run_id if run_id else runs_dir
        raise RunError(f"{where}: no unfinished run to resume (drop --resume to start one)")
    return _create(runs_dir, run_id, config)


def new_run_id(prefix: str = "") -> str:
    """A run id that sorts by start time and does not collide: PREFIX + date-time-XXXX."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run in the folder (oldest first), with its path; unreadable ones are skipped."""
    runs = []
    for candidate in sorted(runs_dir.glob(f"*/{RUN_FILE}")):
        try:
            document = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and "id" in document:
            runs.append({**document, "path": str(candidate.parent)})
    return sorted(runs, key=lambda d: (str(d.get("created", "")), str(d["id"])))


def _create(runs_dir: Path, run_id: str | None, config: dict[str, Any]) -> Run:
    run_id = run_id or new_run_id()
    path = runs_dir / run_id
    runs_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused start creates nothing
    try:
        path.mkdir()  # atomic: two coordinators never create the same run
    except FileExistsError:
        raise RunError(f"{path}: a run with this id exists; pick another --run-id") from None
    lock = _lock(path)
    document = {
        "format": 1,
        "id": run_id,
        "status": RUNNING,
        "created": _now(),
        "finished": None,
        "rounds_done": 0,
        "config": config,
        "versions": package_versions(),
    }
    _write_json(path / RUN_FILE, document)
    return Run(path, document, resumed=False, _lock=lock)


def _resume(path: Path, config: dict[str, Any]) -> Run:
    try:
        document = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise RunError(f"{path}: not a LoLa-DEFT run (no {RUN_FILE})") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path / RUN_FILE}: unreadable: {error}") from None
    if document.get("status") == FINISHED:
        raise RunError(
            f"{path}: run finished after {document.get('rounds_done')} rounds and is kept as it "
            "is; start another with --new-run"
        )
    differences = _differences(document, config)
    if differences:
        raise RunError(
            f"{path}: an unfinished run with other settings: {'; '.join(differences)}. "
            "Resume it with its settings, or pass --new-run to start another beside it"
        )
    lock = _lock(path)
    document["config"] = config  # rounds, learning rate, ... may change on resume
    document["versions"] = package_versions()
    return Run(path, document, resumed=True, _lock=lock)  # written by Run.started()


def _differences(document: dict[str, Any], config: dict[str, Any]) -> list[str]:
    stored = document.get("config", {})
    return [
        f"{key} {stored.get(key)!r} (now {config.get(key)!r})"
        for key in IDENTITY_KEYS
        if stored.get(key) != config.get(key)
    ]


def _lock(path: Path) -> TextIO:
    handle = (path / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise RunError(
            f"{path}: in use by another coordinator (pid {holder}); stop it, or pass "
            "--new-run to start another run"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _write_json(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    os.replace(temporary, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

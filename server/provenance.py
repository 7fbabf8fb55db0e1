"""What every output of a run records so that it can be reproduced from the output alone: the
resolved configuration, the seed, the model's name and fingerprint, and the versions of the
project and of the packages that shaped the numbers."""

from __future__ import annotations

import contextlib
import json
import platform
from dataclasses import asdict
from importlib import metadata
from typing import Any

from lola_deft import __version__

PACKAGES = ("lola-deft", "torch", "transformers", "peft", "numpy", "grpcio", "protobuf")
# Where the run's outputs live, not how it was configured: left out of the record.
OUTPUT_KEYS = ("checkpoint_dir", "resume", "history_paths")


def package_versions() -> dict[str, str]:
    """The versions a run was made with: what a user needs to reproduce it."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def snapshot(config: Any) -> dict[str, Any]:
    """A dataclass configuration as plain JSON data (paths as strings, tuples as lists): what
    run.json keeps and what a resume is compared with."""
    document = dict(json.loads(json.dumps(asdict(config), default=str)))
    for key in OUTPUT_KEYS:
        document.pop(key, None)
    return document


def provenance(config: Any) -> dict[str, Any]:
    """The record written into history.json, metrics JSON, checkpoints and the adapter card.
    `config` is a TrainingSettings (coordinator or centralized)."""
    from lola_deft.ml.model import ModelError, model_fingerprint, model_name

    try:
        fingerprint = model_fingerprint(config.model_dir)
    except (ModelError, OSError, ValueError):
        fingerprint = "unknown"
    return {
        "lola_deft": __version__,
        "seed": config.seed,
        "model": {
            "name": model_name(config.model_dir, getattr(config, "model_name", None)),
            "fingerprint": fingerprint,
        },
        "config": snapshot(config),
        "versions": package_versions(),
    }

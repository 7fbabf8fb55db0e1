"""Test-suite settings: CI runs Hypothesis derandomized so a red build is reproducible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer encoder: a real model for every test, downloaded from nowhere."""
    from lola_deft.ml.random_encoder import make_random_encoder  # torch: not for every suite

    return make_random_encoder(tmp_path_factory.mktemp("tiny-encoder"), "tiny", layers=3)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `deft certs` folder: CA, coordinator, scheduler, devices dev0..dev3 (enrolled)."""
    from lola_deft.server.pki import init_folder

    folder = tmp_path_factory.mktemp("certs")
    init_folder(folder, devices=[f"dev{index}" for index in range(4)])
    return folder


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA's folder, with a device certificate named like one of ours (dev0)."""
    from lola_deft.server.pki import init_folder

    folder = tmp_path_factory.mktemp("foreign-certs")
    init_folder(folder, devices=["dev0"])
    return folder

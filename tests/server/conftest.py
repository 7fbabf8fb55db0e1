from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.random_encoder import make_random_encoder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_encoder(tmp_path_factory.mktemp("tiny-encoder"), "tiny", layers=3)

from __future__ import annotations

from pathlib import Path

import pytest

from lola_deft.ml.random_encoder import make_random_encoder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four layers here: block selection needs more than the shared three-layer encoder."""
    return make_random_encoder(tmp_path_factory.mktemp("tiny-encoder-4"), "tiny", layers=4)

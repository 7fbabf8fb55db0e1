"""A checkpoint's adapter is ready to share: named base model, labels, tokenizer, a model card
from the run, files readable by all, and it loads the way the card says (peft's
AutoPeftModelForSequenceClassification and a transformers pipeline), answering with the task's
label names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lola_deft.ml.glue import EMBEDDED_TASK_DIR, task_spec
from lola_deft.ml.model import DEFAULT_MODEL_NAME, HEAD, default_model_dir, load_model, model_name
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.model_card import RECORD_FILE, Publication
from lola_deft.server.provenance import provenance
from lola_deft.server.training_state import TrainingState

HUB_NAME = "test-org/tiny-encoder"
SENTENCE = "a gripping, beautifully made film"  # the card's example


def history() -> dict[str, object]:
    baseline = {"metric_name": "accuracy", "metric": 0.31, "loss": 1.1, "scores": {}}
    round_one = {
        "round": 1,
        "assignment": [{"device": "jetson-1"}, {"device": "phone-2"}],
        "eval": {**baseline, "metric": 0.47},
    }
    return {"baseline": baseline, "rounds": [round_one]}


@pytest.fixture(scope="module")
def published(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of an MNLI run (3 labels) after one Adam step; returns its adapter folder."""
    spec = task_spec("mnli")
    config = CoordinatorConfig(
        tiny_model_dir, EMBEDDED_TASK_DIR, task="mnli", model_name=HUB_NAME, seed=5
    )
    loaded = load_model(tiny_model_dir, spec.num_labels, config.lora, seed=config.seed)
    state = TrainingState(loaded, 1e-2)
    rng = np.random.default_rng(0)
    names = [n for b in (1, HEAD) for n in loaded.blocks[b]]
    state.apply({n: rng.normal(size=state.params[n].shape).astype(np.float32) for n in names})
    folder = tmp_path_factory.mktemp("checkpoints")
    publication = Publication.prepare(
        loaded.tokenizer, spec, provenance(config), folder / ".tokenizer"
    )
    state.base_model = publication.base_model
    document = history()
    target = state.save(folder, {}, publish=lambda adapter: publication.write(adapter, document))
    loaded.model.eval()
    with torch.no_grad():
        logits = loaded.model(**loaded.tokenizer(SENTENCE, return_tensors="pt")).logits
    (folder / "expected.txt").write_text(spec.id2label()[int(logits.argmax())])
    return target / "adapter"


def test_the_base_model_is_a_name_never_a_path(published: Path) -> None:
    config = json.loads((published / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_NAME
    card = (published / "README.md").read_text()
    assert f"base_model: {HUB_NAME}\n" in card
    record = (published / RECORD_FILE).read_text()
    for local in (published.parents[2], Path(sys.prefix), EMBEDDED_TASK_DIR):  # no local path
        assert str(local) not in card and str(local) not in record
    assert 'model_dir = "test-org/tiny-encoder"' in card
    assert 'data_dir = "embedded:sst2-mini"' in card


def test_the_card_describes_the_run(published: Path) -> None:
    card = (published / "README.md").read_text()
    assert "on mnli" in card
    assert "| before training | 0.3100 |" in card and "| after round 1 | 0.4700 |" in card
    assert "Devices (2): jetson-1, phone-2" in card
    assert "`jbba`" in card and "Seed: 5" in card
    assert "0: `contradiction`, 1: `entailment`, 2: `neutral`" in card
    assert "learning_rate = 0.005" in card and 'task = "mnli"' in card  # the run config
    assert "**The data is synthetic**" in card  # the embedded task's data
    record = json.loads((published / RECORD_FILE).read_text())
    assert record["labels"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert record["model"]["name"] == HUB_NAME and record["seed"] == 5
    assert {"lola-deft", "torch", "peft", "python"} <= set(record["versions"])


def test_the_tokenizer_is_saved_once_and_linked_into_each_checkpoint(published: Path) -> None:
    stash = published.parents[1] / ".tokenizer"
    for source in stash.iterdir():
        assert (published / source.name).stat().st_ino == source.stat().st_ino, source.name


def test_every_file_is_readable_by_all(published: Path) -> None:
    files = sorted(path.name for path in published.iterdir())
    assert {"adapter_model.safetensors", "tokenizer.json", "README.md", RECORD_FILE} <= set(files)
    for path in published.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name


def fake_hub_cache(root: Path, name: str, model_dir: Path) -> Path:
    """The layout huggingface_hub keeps for a downloaded model: what a user who has the base
    model cached has, so the base is found by its name with no network."""
    repo = root / f"models--{name.replace('/', '--')}"
    revision = "0" * 40
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return root


def test_it_loads_as_the_card_says_and_answers_with_label_names(
    published: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    card = (published / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    assert "AutoPeftModelForSequenceClassification.from_pretrained(" in snippet
    cache = fake_hub_cache(tmp_path / "hub", HUB_NAME, tiny_model_dir)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    ran = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=published,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    [answer] = eval(ran.stdout.strip().splitlines()[-1])  # [{'label': ..., 'score': ...}]
    expected = (published.parents[1] / "expected.txt").read_text()
    assert answer["label"] == expected  # the trained adapter's own answer, by name
    assert answer["label"] in ("contradiction", "entailment", "neutral")


def test_the_base_model_name_comes_from_the_user_the_config_or_the_folder(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert model_name(tiny_model_dir, "org/given") == "org/given"
    assert model_name(default_model_dir()) == DEFAULT_MODEL_NAME
    named = tmp_path / "roberta-base"
    shutil.copytree(tiny_model_dir, named)
    config = json.loads((named / "config.json").read_text())
    (named / "config.json").write_text(json.dumps({**config, "_name_or_path": "/abs/path/x"}))
    assert model_name(named) == "roberta-base"  # a path in the config is no name
    (named / "config.json").write_text(json.dumps({**config, "_name_or_path": "FacebookAI/x"}))
    assert model_name(named) == "FacebookAI/x"

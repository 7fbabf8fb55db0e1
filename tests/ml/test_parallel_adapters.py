"""Parallel adapters beside a frozen encoder: shapes, no gradient into the backbone, the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lola_deft.ml.activation_cache import ActivationCache, CacheKey
from lola_deft.ml.batching import encode
from lola_deft.ml.glue import EMBEDDED_TASK_DIR, read_split, task_spec
from lola_deft.ml.model import load_model
from lola_deft.ml.pac_training import CachedStates, adapter_gradient, backbone_states
from lola_deft.ml.parallel_adapters import (
    AdapterShape,
    ParallelAdapters,
    load_adapters,
    load_backbone,
    save_adapters,
)


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path) -> tuple[torch.nn.Module, ParallelAdapters, CachedStates]:
    torch.manual_seed(0)
    backbone, hidden, layers = load_backbone(tiny_model_dir)
    spec = task_spec("sst2")
    tokenizer = load_model(tiny_model_dir, spec.num_labels).tokenizer
    split = read_split(EMBEDDED_TASK_DIR, spec, "train").subset(range(32))
    data = encode(tokenizer, split, 32)
    cache = ActivationCache(CacheKey("m", "sst2", "0/1", 32), None, 1 << 30, 0)
    adapters = ParallelAdapters(AdapterShape(hidden, layers, spec.num_labels))
    return backbone, adapters, CachedStates(backbone, data, cache, batch_size=8)


def test_states_cover_every_layer_and_the_side_network_reads_them(
    setup: tuple[torch.nn.Module, ParallelAdapters, CachedStates],
) -> None:
    backbone, adapters, states = setup
    batch = states.data.batch(np.arange(4))
    hidden = backbone_states(backbone, batch)
    assert hidden.shape == (4, adapters.shape.num_layers + 1, 32, adapters.shape.hidden_size)
    logits = adapters(hidden, batch["attention_mask"].bool())
    assert logits.shape == (4, 2)
    with pytest.raises(ValueError, match="states must be"):
        adapters(hidden[:, 1:], batch["attention_mask"].bool())


def test_padding_does_not_change_a_samples_logits(
    setup: tuple[torch.nn.Module, ParallelAdapters, CachedStates],
) -> None:
    _, adapters, states = setup
    adapters.eval()
    for parameter in adapters.up.parameters():  # make the side network matter to the logits
        torch.nn.init.normal_(parameter, std=0.1)
    alone, alone_mask = states.batch([0])
    padded, padded_mask = states.batch([0, int(np.argmax(states.lengths))])
    with torch.no_grad():
        np.testing.assert_allclose(
            adapters(alone, alone_mask)[0], adapters(padded, padded_mask)[0], atol=1e-3
        )


def test_a_step_trains_the_adapters_and_never_touches_the_backbone(
    setup: tuple[torch.nn.Module, ParallelAdapters, CachedStates],
) -> None:
    backbone, adapters, states = setup
    before = {name: value.clone() for name, value in backbone.state_dict().items()}
    result = adapter_gradient(adapters, states, [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert result.iterations == 2 and np.isfinite(result.loss)
    assert set(result.gradients) == {name for name, _ in adapters.named_parameters()}
    assert any(float(g.abs().sum()) > 0 for g in result.gradients.values())
    assert all(p.grad is None for p in backbone.parameters())
    after = backbone.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert states.cache.stats.hits + states.cache.stats.misses >= 8


def test_the_export_loads_into_an_equal_network(
    setup: tuple[torch.nn.Module, ParallelAdapters, CachedStates], tmp_path: Path
) -> None:
    _, adapters, states = setup
    save_adapters(adapters, tmp_path / "export", base_model="tiny")
    loaded = load_adapters(tmp_path / "export")
    assert loaded.shape == adapters.shape
    hidden, mask = states.batch([0, 1])
    adapters.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(adapters(hidden, mask), loaded(hidden, mask))

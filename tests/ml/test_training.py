"""Truncated block gradients equal a full LoRA backward pass, and truncation is real."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import read_split, task_spec
from lola_deft.ml.model import HEAD, LoadedModel, load_model
from lola_deft.ml.training import block_gradient, select_block

TASK_DIR = Path(__file__).parents[2] / "ml" / "tasks" / "sst2-mini"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, num_labels=2, dropout=0.0, seed=1)


@pytest.fixture(scope="module")
def batch(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    split = read_split(TASK_DIR, task_spec("sst2"), "train").subset(range(64))
    data = encode(loaded.tokenizer, split, max_length=24)
    return BatchSampler(data, batch_size=8, seed=0).next_batch()


def randomise_adapters(loaded: LoadedModel) -> None:
    # Fresh LoRA B matrices are zero, which would make A's gradients zero; use a real state.
    generator = torch.Generator().manual_seed(5)
    state = {
        name: torch.randn(value.shape, generator=generator) * 0.1
        for name, value in loaded.trainable_state().items()
    }
    loaded.load_trainable_state(state)


def test_block_gradients_equal_the_full_backward_pass(
    loaded: LoadedModel, batch: dict[str, torch.Tensor]
) -> None:
    randomise_adapters(loaded)
    full = block_gradient(loaded, None, [batch]).gradients
    assert set(full) == set(loaded.trainable_names())
    for block in range(1, loaded.num_blocks + 1):
        truncated = block_gradient(loaded, block, [batch])
        assert set(truncated.gradients) == set(loaded.blocks[block]) | set(loaded.blocks[HEAD])
        for name, gradient in truncated.gradients.items():
            assert gradient.abs().sum() > 0, name
            torch.testing.assert_close(gradient, full[name], rtol=1e-5, atol=1e-7)


def saved_bytes_and_graph_layers(
    loaded: LoadedModel, block: int, batch: dict[str, torch.Tensor]
) -> tuple[int, list[bool]]:
    select_block(loaded, block)
    layers = loaded.model.base_model.model.bert.encoder.layer
    in_graph: list[bool] = [False] * len(layers)
    hooks = [
        layer.register_forward_hook(
            lambda module, args, output, i=i: in_graph.__setitem__(
                i, bool((output[0] if isinstance(output, tuple) else output).requires_grad)
            )
        )
        for i, layer in enumerate(layers)
    ]
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loaded.model(**batch).loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    return saved, in_graph


def test_truncation_is_real(loaded: LoadedModel, batch: dict[str, torch.Tensor]) -> None:
    saved = []
    num_layers = loaded.num_layers
    for block in range(1, loaded.num_blocks + 1):
        saved_bytes, in_graph = saved_bytes_and_graph_layers(loaded, block, batch)
        saved.append(saved_bytes)
        first_layer = num_layers - block  # block 1 is the last encoder layer
        assert in_graph == [layer >= first_layer for layer in range(num_layers)], block
    assert all(a < b for a, b in itertools.pairwise(saved)), saved


def test_only_the_block_and_head_are_trainable(loaded: LoadedModel) -> None:
    names = select_block(loaded, 2)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert trainable == set(names) == set(loaded.blocks[2]) | set(loaded.blocks[HEAD])
    with pytest.raises(ValueError, match=r"block must be 1\.\.4"):
        select_block(loaded, 9)


def test_a_block_alone_leaves_the_head_out(
    loaded: LoadedModel, batch: dict[str, torch.Tensor]
) -> None:
    with_head = block_gradient(loaded, 2, [batch])
    alone = block_gradient(loaded, 2, [batch], head=False)
    assert set(alone.gradients) == set(loaded.blocks[2])
    assert set(with_head.gradients) == set(loaded.blocks[2]) | set(loaded.blocks[HEAD])
    for name, value in alone.gradients.items():  # the block's gradient does not depend on it
        torch.testing.assert_close(value, with_head.gradients[name])


def test_block_ids_follow_the_paper_depth_index(loaded: LoadedModel) -> None:
    # block 1 = last layer (shortest backward), block L = first layer.
    assert all(".layer.3." in name for name in loaded.blocks[1])
    assert all(".layer.0." in name for name in loaded.blocks[4])
    assert len(loaded.blocks[1]) == 4  # lora_A and lora_B of query and value
    assert loaded.block_payload_bits(1) == 32 * (
        sum(loaded.parameters_by_name()[n].numel() for n in loaded.blocks[1] + loaded.blocks[HEAD])
    )


def test_roberta_family_encoders_map_to_blocks_too(tmp_path: Path) -> None:
    from lola_deft.ml.random_encoder import make_random_encoder

    model_dir = make_random_encoder(tmp_path / "roberta", "tiny", layers=3, family="roberta")
    loaded = load_model(model_dir, num_labels=3, dropout=0.0)
    assert loaded.model.base_model.model.config.model_type == "roberta"
    assert all(".layer.2." in name for name in loaded.blocks[1])
    head = loaded.blocks[HEAD]
    assert any("dense" in n for n in head) and any("out_proj" in n for n in head)
    split = read_split(TASK_DIR, task_spec("sst2"), "dev").subset(range(8))
    data = encode(loaded.tokenizer, split, max_length=16)
    result = block_gradient(loaded, 2, [BatchSampler(data, 4).next_batch()])
    assert set(result.gradients) == set(loaded.blocks[2]) | set(head)

"""Pipeline stages: loaded without the rest of the encoder, and together equal to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import EMBEDDED_TASK_DIR, read_split, task_spec
from lola_deft.ml.pac_training import backbone_states
from lola_deft.ml.parallel_adapters import load_backbone
from lola_deft.ml.pipeline_stage import StageError, StageModel, backbone_units


def batch(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    split = read_split(EMBEDDED_TASK_DIR, task_spec("sst2"), "train").subset(range(8))
    return BatchSampler(encode(tokenizer, split, 24), 8, seed=0).next_batch()


@pytest.mark.parametrize("cut_at", [[], [0], [1, 2]])
def test_stages_put_together_equal_the_whole_backbone(
    tiny_model_dir: Path, cut_at: list[int]
) -> None:
    units = backbone_units(tiny_model_dir)  # embeddings + the layers
    assert units >= 4
    ends = [*cut_at, units - 1]
    cuts = [(0 if i == 0 else ends[i - 1] + 1, end) for i, end in enumerate(ends)]
    inputs = batch(tiny_model_dir)
    backbone, _, _ = load_backbone(tiny_model_dir)
    expected = backbone_states(backbone, inputs)
    pieces, hidden = [], None
    for first, last in cuts:
        stage = StageModel(tiny_model_dir, first, last)
        given = inputs if first == 0 else {"hidden": hidden, "mask": inputs["attention_mask"]}
        states = stage.run(given)
        assert states.shape[1] == last - first + 1
        pieces.append(states)
        hidden = states[:, -1]
    together = torch.cat(pieces, dim=1)
    real = inputs["attention_mask"].bool()  # padding's states are never cached
    assert together.shape == expected.shape
    torch.testing.assert_close(
        together[:, :, :][real[:, None, :].expand(-1, units, -1)],
        expected[real[:, None, :].expand(-1, units, -1)],
        atol=1e-4,
        rtol=1e-4,
    )


def test_a_stage_holds_only_its_own_weights(tiny_model_dir: Path) -> None:
    last = backbone_units(tiny_model_dir) - 1
    whole = StageModel(tiny_model_dir, 0, last).parameter_bytes()
    later = StageModel(tiny_model_dir, last - 1, last)
    assert later.model.embeddings is None
    assert len(later.model.encoder.layer) == 2
    assert later.parameter_bytes() < whole  # no embeddings, two of the layers


def test_a_unit_range_outside_the_encoder_is_refused(tiny_model_dir: Path) -> None:
    units = backbone_units(tiny_model_dir)
    with pytest.raises(StageError, match=f"units 0..{units - 1}"):
        StageModel(tiny_model_dir, 2, units)
    with pytest.raises(StageError):
        StageModel(tiny_model_dir, 3, 2)

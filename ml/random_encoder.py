"""Randomly initialised encoders saved as local model directories, for tests and benchmarks.

They reuse the tokenizer files of the default all-MiniLM-L6-v2 package so everything stays
offline. `tiny` trains in milliseconds; `base` has roberta-base's shape (12 layers, hidden 768,
12 heads, FFN 3072) with a BERT vocabulary, for the per-block cost benchmark.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from lola_deft.ml.model import default_model_dir

SIZES = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    # Bigger adapters than tiny (84 KB per block upload) but still instant: for the testbed.
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 256,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def make_random_encoder(
    path: Path | str,
    size: str = "tiny",
    *,
    layers: int | None = None,
    seed: int = 0,
    family: str = "bert",
) -> Path:
    """Write a random BERT- or RoBERTa-architecture encoder (and the MiniLM tokenizer)."""
    path = Path(path)
    shape = dict(SIZES[size])
    if layers is not None:
        shape["num_hidden_layers"] = layers
    source = default_model_dir()
    vocab_size = sum(1 for _ in (source / "vocab.txt").open(encoding="utf-8"))
    torch.manual_seed(seed)
    if family == "roberta":
        # Keeps the BERT tokenizer's ids valid: pad id 0 and two token types for sentence pairs.
        config: PretrainedConfig = RobertaConfig(
            vocab_size=vocab_size, max_position_embeddings=514, pad_token_id=0, type_vocab_size=2
        )
        model_class: type[PreTrainedModel] = RobertaForSequenceClassification
    else:
        config = BertConfig(vocab_size=vocab_size, max_position_embeddings=512)
        model_class = BertForSequenceClassification
    for key, value in shape.items():
        setattr(config, key, value)
    model_class(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, path / name)
    return path

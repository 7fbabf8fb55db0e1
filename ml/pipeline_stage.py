"""One stage of PAC+'s cache-filling pipeline: a contiguous range of a frozen encoder's units
(unit 0: the embeddings; unit u >= 1: encoder layer u), loaded without the rest of the model.

A device that cannot hold the backbone runs only its stage, so only that stage's weights are
read: the model is built from its config with just the stage's layers, and the matching
tensors are read one by one from the checkpoint's safetensors files (the rest never reach
memory). A stage returns the hidden state after each of its units, stacked as the activation
cache keeps them; stage outputs put together equal `pac_training.backbone_states` (tested).

Encoders whose layers sit at `encoder.layer` (BERT, RoBERTa, MiniLM, ELECTRA, ...) are served.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from lola_deft.ml.model import ModelError, encoder_size, require_model_dir

EMBEDDING_KEY = "embeddings.word_embeddings.weight"


class StageError(ModelError):
    """A stage that cannot be built (unit range, model layout, missing weights)."""


def backbone_units(model_dir: Path) -> int:
    """Units of the encoder: the embeddings and every layer."""
    return encoder_size(model_dir)[1] + 1


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / shard for shard in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise StageError(f"{model_dir}: a pipeline stage reads model.safetensors (none found)")


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A [batch, tokens] 0/1 mask as the layers' additive [batch, 1, 1, tokens] one."""
    keep = mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


class StageModel:
    def __init__(
        self, model_dir: Path, first: int, last: int, device: torch.device | None = None
    ) -> None:
        from safetensors import safe_open
        from transformers import AutoConfig, AutoModel

        model_dir = require_model_dir(model_dir)
        units = backbone_units(model_dir)
        if not 0 <= first <= last < units:
            raise StageError(f"stage units {first}..{last}: the encoder has units 0..{units - 1}")
        self.first, self.last, self.units = first, last, units
        self.device = device or torch.device("cpu")
        self.layer_offset = max(first, 1)  # the encoder layer number of this stage's layer 0
        layers = last - self.layer_offset + 1 if last >= 1 else 0
        config = copy.deepcopy(AutoConfig.from_pretrained(str(model_dir)))
        config.num_hidden_layers = layers
        model = AutoModel.from_config(config)
        if not hasattr(getattr(model, "encoder", None), "layer"):
            raise StageError(
                f"{model_dir}: pipeline stages need an encoder.layer model (BERT-like)"
            )
        wanted = {
            name: parameter
            for name, parameter in model.state_dict().items()
            if (name.startswith("embeddings.") and first == 0) or name.startswith("encoder.")
        }
        found: dict[str, torch.Tensor] = {}
        for path in _weight_files(model_dir):
            with safe_open(str(path), framework="pt") as weights:
                keys = list(weights.keys())
                prefix = next(
                    (k[: -len(EMBEDDING_KEY)] for k in keys if k.endswith(EMBEDDING_KEY)), ""
                )
                available = set(keys)
                for name in wanted:
                    source = prefix + self._source_name(name)
                    if source in available:
                        found[name] = weights.get_tensor(source)
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise StageError(f"{model_dir}: no weights for {missing[:3]} (a different layout?)")
        model.load_state_dict(found, strict=False)
        if first > 0:
            model.embeddings = None  # not this stage's: frees its memory
        if hasattr(model, "pooler"):
            model.pooler = None
        model.eval()
        model.requires_grad_(False)
        self.model = model.to(self.device)

    def _source_name(self, name: str) -> str:
        """The checkpoint's name of one of this stage's tensors (its layers are renumbered)."""
        if not name.startswith("encoder.layer."):
            return name
        _, _, index, rest = name.split(".", 3)
        return f"encoder.layer.{int(index) + self.layer_offset - 1}.{rest}"

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def run(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """States after each of the stage's units: [batch, units, tokens, hidden] on the CPU.

        The first stage takes the tokenizer's inputs (input_ids, attention_mask, and
        token_type_ids where the model has them); a later stage takes "hidden" (the states
        after the unit before it) and "mask"."""
        model = self.model
        with torch.no_grad():
            if self.first == 0:
                mask = inputs["attention_mask"].to(self.device)
                embedding_inputs = {"input_ids": inputs["input_ids"].to(self.device)}
                if "token_type_ids" in inputs:
                    embedding_inputs["token_type_ids"] = inputs["token_type_ids"].to(self.device)
                hidden = model.embeddings(**embedding_inputs)
                outputs = [hidden]
            else:
                hidden = inputs["hidden"].to(self.device, dtype=torch.float32)
                mask = inputs["mask"].to(self.device)
                outputs = []
            extended = additive_mask(mask, hidden.dtype)
            for layer in model.encoder.layer:
                result = layer(hidden, attention_mask=extended)
                hidden = result[0] if isinstance(result, tuple) else result
                outputs.append(hidden)
        return torch.stack(outputs, dim=1).cpu()

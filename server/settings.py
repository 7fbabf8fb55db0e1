"""What a DEFT run and its centralized baseline share: model, task and training budget.

One definition keeps the comparison fair: `deft centralized` accepts exactly the training flags
of `deft coordinator serve` and builds the same settings from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lola_deft.ml.model import LoraSettings

# What a run trains: LoRA blocks (LoLa-DEFT, the paper) or PAC+'s parallel adapters over cached
# backbone states. Each has its own default learning rate: at LoRA's 5e-3 the side network
# diverges on the embedded task; 1e-3 trains it steadily (server/centralized_pac.py).
METHODS = ("lola", "pac")
LEARNING_RATES = {"lola": 5e-3, "pac": 1e-3}


class SettingsError(ValueError):
    """Settings that cannot work together (said in one line, before anything starts)."""


@dataclass
class TrainingSettings:
    model_dir: Path
    data_dir: Path
    task: str = "sst2"
    local_iterations: int = 2  # the paper's M: mini-batches per device (per step) per round
    batch_size: int = 16
    max_seq_length: int = 32
    learning_rate: float = 5e-3
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval_every: int = 1
    seed: int = 0
    model_name: str | None = None  # recorded as the adapter's base model (None: from the model)
    method: str = "lola"  # or "pac" (METHODS)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SettingsError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")

"""Which trainer a run's method gets: LoRA blocks (LoLa-DEFT) or PAC+'s parallel adapters."""

from __future__ import annotations

import logging

from transformers import AutoTokenizer

from lola_deft.ml.batching import encode
from lola_deft.ml.glue import read_dev_sets, task_spec
from lola_deft.ml.model import load_model, require_model_dir
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.model_card import TOKENIZER_FOLDER, Publication
from lola_deft.server.pac_trainer import SideNetworkTrainer, build_side_network_trainer
from lola_deft.server.provenance import provenance
from lola_deft.server.trainer import AdapterTrainer
from lola_deft.server.training_state import (
    TrainingState,
    adapter_digest,
    remove_stale_temporaries,
)

log = logging.getLogger("deft.coordinator")


def build_trainer(
    config: CoordinatorConfig, wire_bits: int = 32
) -> AdapterTrainer | SideNetworkTrainer:
    """The method's trainer, its checkpoint restored when resuming (printed with the adapter's
    digest, so a resumed run can be checked against the one that stopped). `wire_bits`: bits
    per value an upload carries (16 for float16/bfloat16 uploads), for the payload S."""
    spec = task_spec(config.task)
    if config.checkpoint_dir.is_dir():  # half-written checkpoints of a killed run
        for stale in remove_stale_temporaries(config.checkpoint_dir):
            log.warning("removed %s, a checkpoint a killed process left half-written", stale)
    origin = provenance(config)  # what history, checkpoints and the adapter card record
    tokenizer_folder = config.checkpoint_dir / TOKENIZER_FOLDER
    trainer: AdapterTrainer | SideNetworkTrainer
    if config.method == "pac":
        tokenizer = AutoTokenizer.from_pretrained(str(require_model_dir(config.model_dir)))
        trainer = build_side_network_trainer(
            config.model_dir,
            config.data_dir,
            spec,
            tokenizer,
            config.max_seq_length,
            config.learning_rate,
            config.seed,
            slots=config.min_agents,
            batch_size=config.batch_size,
            checkpoint_dir=config.checkpoint_dir,
            publication=Publication.prepare(tokenizer, spec, origin, tokenizer_folder),
            wire_bits=wire_bits,
        )
    else:
        loaded = load_model(config.model_dir, spec.num_labels, config.lora, seed=config.seed)
        dev = {
            name: encode(loaded.tokenizer, split, config.max_seq_length)
            for name, split in read_dev_sets(config.data_dir, spec).items()
        }
        publication = Publication.prepare(loaded.tokenizer, spec, origin, tokenizer_folder)
        trainer = AdapterTrainer(
            TrainingState(loaded, config.learning_rate),
            dev,
            spec,
            config.checkpoint_dir,
            publication,
            wire_bits,
        )
    if config.resume:
        restored = trainer.state.load(config.checkpoint_dir)
        print(
            f"resumed from {restored}: {trainer.state.round} rounds done, "
            f"adapter sha256 {adapter_digest(trainer.state.snapshot())}",
            flush=True,
        )
    return trainer

"""The coordinator's model side for the round engine: adapters, Adam, evaluation on the dev
split and checkpoints, behind the engine's `Trainer` interface (PAC+'s: pac_trainer.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lola_deft.ml.batching import EncodedSplit
from lola_deft.ml.evaluation import evaluate_sets
from lola_deft.ml.glue import TaskSpec
from lola_deft.ml.model import HEAD
from lola_deft.server.messages import Evaluation, RunHistory
from lola_deft.server.model_card import Publication
from lola_deft.server.training_state import TrainingState


class CheckpointedTrainer:
    """What both methods' trainers share: Adam on `state`, and checkpoints that carry the run's
    history (and, with a publication, a shareable adapter folder and the provenance)."""

    # Blocks are device slots that each train the whole model (PAC+): a device's memory need
    # is then its own report's, not the largest any device measured.
    independent_slots = False

    def __init__(
        self, state: TrainingState, checkpoint_dir: Path, publication: Publication | None
    ) -> None:
        self.state = state
        self.publication = publication
        if publication is not None:
            state.base_model = publication.base_model
        self.checkpoint_dir = checkpoint_dir
        self.shapes = state.shapes()

    def snapshot(self) -> dict[str, np.ndarray]:
        return self.state.snapshot()

    def apply(self, gradients: dict[str, np.ndarray]) -> None:
        self.state.apply(gradients)

    def checkpoint(self, completed: int, history: RunHistory) -> None:
        document = history.to_dict()
        self.state.round = completed
        self.state.history = document["rounds"]
        self.state.baseline = document["baseline"]
        publication = self.publication
        if publication is None:
            self.state.save(self.checkpoint_dir)
            return
        self.state.save(
            self.checkpoint_dir,
            extra={"provenance": publication.provenance},
            publish=lambda folder: publication.write(folder, document),
        )

    def restored_history(self) -> RunHistory:
        return RunHistory.from_dict({"baseline": self.state.baseline, "rounds": self.state.history})


class AdapterTrainer(CheckpointedTrainer):
    """LoLa-DEFT: LoRA blocks and the classification head."""

    def __init__(
        self,
        state: TrainingState,
        dev: dict[str, EncodedSplit],
        spec: TaskSpec,
        checkpoint_dir: Path,
        publication: Publication | None = None,
        wire_bits: int = 32,
    ) -> None:
        """`publication` makes every checkpoint's adapter shareable (card, tokenizer) and puts
        the run's provenance into the checkpoint. `dev` holds the task's evaluation sets
        ("dev", and MNLI's "mismatched")."""
        super().__init__(state, checkpoint_dir, publication)
        self.dev = dev
        self.spec = spec
        loaded = state.loaded
        self.blocks = loaded.num_blocks
        # S of the latency model: what one upload carries, at the bits per value it travels in
        # (16 for float16/bfloat16 uploads).
        scale = wire_bits / 32
        self.head_bits = float(loaded.head_payload_bits()) * scale
        self.block_bits = float(loaded.block_payload_bits(1)) * scale - self.head_bits
        self.block_names = {b: names for b, names in loaded.blocks.items() if b != HEAD}
        self.head_names = list(loaded.blocks[HEAD])

    def evaluate(self) -> Evaluation:
        return Evaluation.from_dict(evaluate_sets(self.state.loaded, self.dev, self.spec))

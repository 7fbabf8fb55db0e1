"""The coordinator's model side for `--method pac`: PAC+'s parallel adapters in the round engine.

PAC+'s cached epochs are data parallelism: every device trains the whole side network on its
own samples' cached states. In the engine's terms a round has `slots` blocks that are all the
same: a block is a place for one device, and every upload carries every adapter tensor through
the collector's head path, so the checks, the norm guard and the robust combiners (mean, median,
trimmed mean over the devices' gradients) are the ones LoLa-DEFT's head already has. Each device
reports its own memory need per slot (the backbone while its cache is cold, the side network
alone once it is warm), so `independent_slots` tells the engine not to take the fleet's largest.

The coordinator needs the backbone only for the dev sets' states: they are computed at the
first evaluation and kept in memory (float16, up to DEV_CACHE_BYTES), and once all of them are
the backbone is released; a dev set too large for the budget keeps it for the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lola_deft.ml.activation_cache import CacheKey
from lola_deft.ml.batching import encode
from lola_deft.ml.glue import TaskSpec, read_dev_sets
from lola_deft.ml.model import content_digest
from lola_deft.ml.pac_training import CachedStates
from lola_deft.ml.parallel_adapters import load_backbone, side_network
from lola_deft.server.allocator import AllocationFailed
from lola_deft.server.centralized_pac import cached_split, evaluate_adapters
from lola_deft.server.messages import Evaluation
from lola_deft.server.model_card import Publication
from lola_deft.server.pipeline_planning import BackboneCosts, measure_backbone
from lola_deft.server.trainer import CheckpointedTrainer
from lola_deft.server.training_state import SideNetworkState

log = logging.getLogger("deft.coordinator")
# The dev sets' states on the coordinator (float16); beyond it, evaluations run the backbone
# for the rest, and the backbone stays loaded.
DEV_CACHE_BYTES = 2 * 2**30


class SideNetworkTrainer(CheckpointedTrainer):
    independent_slots = True

    def __init__(
        self,
        state: SideNetworkState,
        dev: dict[str, CachedStates],
        spec: TaskSpec,
        checkpoint_dir: Path,
        slots: int,
        publication: Publication | None = None,
        wire_bits: int = 32,
        model_dir: Path | None = None,
        micro_batch: tuple[int, int] = (16, 32),
    ) -> None:
        """`model_dir` and `micro_batch` (samples, tokens): what pipelines are planned for."""
        super().__init__(state, checkpoint_dir, publication)
        self.model_dir = model_dir
        self.micro_batch = micro_batch
        self._costs: BackboneCosts | None = None
        self.adapters = state.adapters
        self.dev = dev
        self.spec = spec
        self.blocks = slots
        self.block_bits = 0.0  # a slot has no tensors of its own: everything is "head"
        values = sum(parameter.numel() for parameter in state.params.values())
        self.head_bits = float(values) * wire_bits
        self.block_names: dict[int, list[str]] = {slot: [] for slot in range(1, slots + 1)}
        self.head_names = list(state.params)

    def backbone_costs(self) -> BackboneCosts:
        """The backbone's reference costs for pipeline plans, measured once (on first need)."""
        if self._costs is None:
            if self.model_dir is None:
                raise AllocationFailed("no model folder to measure pipeline stages on")
            self._costs = measure_backbone(self.model_dir, *self.micro_batch)
        return self._costs

    def evaluate(self) -> Evaluation:
        result = evaluate_adapters(self.adapters, self.dev, self.spec)
        for states in self.dev.values():  # every dev state is cached now
            states.release_backbone()
        return Evaluation.from_dict(result)


def build_side_network_trainer(
    model_dir: Path,
    data_dir: Path,
    spec: TaskSpec,
    tokenizer: object,
    max_seq_length: int,
    learning_rate: float,
    seed: int,
    slots: int,
    batch_size: int,
    checkpoint_dir: Path,
    publication: Publication | None,
    wire_bits: int,
) -> SideNetworkTrainer:
    """The trainer with fresh adapters (a checkpoint is restored into its state by the caller)
    and the dev sets, whose states are computed at the first evaluation. `slots`: devices a
    round trains (0: as many as the encoder has layers, the fleet LoRA blocks would need)."""
    adapters = side_network(model_dir, spec.num_labels, seed)
    layers = adapters.shape.num_layers
    backbone, _, _ = load_backbone(model_dir)
    digest = content_digest(model_dir)
    dev = {
        name: cached_split(
            backbone,
            encode(tokenizer, split, max_seq_length),
            CacheKey(digest, spec.name, name, max_seq_length, "float16"),
            loader=lambda: load_backbone(model_dir)[0],
            budget_bytes=DEV_CACHE_BYTES,
        )
        for name, split in read_dev_sets(data_dir, spec).items()
    }
    state = SideNetworkState(adapters, learning_rate)
    return SideNetworkTrainer(
        state,
        dev,
        spec,
        checkpoint_dir,
        slots or layers,
        publication=publication,
        wire_bits=wire_bits,
        model_dir=model_dir,
        micro_batch=(batch_size, max_seq_length),
    )

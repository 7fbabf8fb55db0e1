"""The agent's work in a `--method pac` run: PAC+'s parallel adapters over this device's own
samples, their backbone states cached once (memory, then disk, within budgets; float16 or int8
if asked) and reused every later epoch. No networking here.

A round's slot is the whole side network: the agent trains it for the instruction's mini-batches
and uploads every adapter tensor's gradient. While the cache is cold a step also runs the
backbone's forward for the samples it has not seen; once every sample of the shard is cached the
backbone is released and a step is the side network alone, and the report says so (its memory
need and seconds per iteration drop), so the scheduler sees a warm device as it is.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import statistics
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from lola_deft.device_agent.channel import EmulatedChannel, MeasuredChannel
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.profiler import default_cache_dir, saved_bytes
from lola_deft.device_agent.settings import AgentConfig
from lola_deft.device_agent.worker import (
    TrainedBlock,
    available_memory,
    channel_state,
    local_split,
    shard_of,
    upload_dtype_of,
)
from lola_deft.ml.activation_cache import ActivationCache, CacheKey, CacheStats
from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import Split
from lola_deft.ml.model import content_digest, encoder_size
from lola_deft.ml.pac_training import CachedStates, adapter_gradient
from lola_deft.ml.parallel_adapters import (
    AdapterShape,
    ParallelAdapters,
    load_backbone,
    side_network,
)
from lola_deft.protos.deft.v1 import coordinator_pb2

log = logging.getLogger("deft.agent")
RECENT = 3  # measured rounds the compute correction is the median of


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def split_digest(split: Split) -> str:
    """The samples' texts, in order: what the cached states of index i were computed from."""
    digest = hashlib.sha256()
    for texts in split.texts:
        digest.update(json.dumps(texts).encode())
    return digest.hexdigest()[:16]


def backbone_file_bytes(model_dir: Path) -> float:
    """The backbone's weights as its files hold them: what loading it would take."""
    files = list(model_dir.glob("*.safetensors")) or list(model_dir.glob("pytorch_model*.bin"))
    return float(sum(path.stat().st_size for path in files))


def synthetic_states(
    states: CachedStates, indices: list[int], shape: AdapterShape, length: int
) -> CachedStates:
    """Random states of the real size for `indices`, in a throw-away cache: what a step costs
    is measured before any real state exists."""
    generator = np.random.default_rng(0)
    cache = ActivationCache(CacheKey("synthetic", "", "", length, "float32"), None, 1 << 40, 0)
    for index in indices:
        tokens = int(states.lengths[index])
        cache.put(
            index, generator.standard_normal((shape.num_layers + 1, tokens, shape.hidden_size))
        )
    return CachedStates(None, states.data, cache)


class SideNetworkWorker:
    def __init__(
        self,
        config: AgentConfig,
        metrics: AgentMetrics,
        device: torch.device,
        channel: EmulatedChannel | MeasuredChannel,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.device = device
        self.channel = channel
        self.upload_dtype = "float32"
        self.adapters: ParallelAdapters | None = None
        self.states: CachedStates | None = None
        self.sampler: BatchSampler | None = None
        self.slots = 0
        self.warm_s = 0.0  # a step over cached states, per mini-batch
        self.fill_s = 0.0  # the backbone's forward for one mini-batch of uncached samples
        self.warm_bytes = 0.0  # the side network's training peak
        self.backbone_bytes = 0.0  # what a cold cache adds: the backbone and its forward
        self.ratios: deque[float] = deque(maxlen=RECENT)  # measured over modelled compute
        self._modelled_s = 0.0  # the last round's modelled seconds per iteration
        self._exported = CacheStats()
        self.setup_key: tuple[object, ...] | None = None
        self.needs_pipeline = False  # the backbone does not fit: states come from pipelines
        self.max_length = 0

    @property
    def factor(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 1.0

    def prepare(self, setup: coordinator_pb2.RegisterResponse) -> None:
        """Backbone, side network, local shard and activation cache, once per training setup;
        then one mini-batch measured cold (through the backbone) and warm (from the cache)."""
        self.upload_dtype = upload_dtype_of(setup)
        self.slots = setup.blocks
        shard = shard_of(self.config, setup)
        key = (setup.task, setup.num_labels, setup.batch_size, setup.max_seq_length, shard)
        if key == self.setup_key:
            return
        config = self.config
        log.info("%s: loading the backbone and data for %s (PAC+)", config.device_id, setup.task)
        from transformers import AutoTokenizer

        hidden, layers = encoder_size(config.model_dir)
        self.max_length = setup.max_seq_length
        # A cold step holds the backbone and one mini-batch's states of every layer.
        state_bytes = 4.0 * setup.batch_size * (layers + 1) * setup.max_seq_length * hidden
        self.backbone_bytes = backbone_file_bytes(config.model_dir) + 2.0 * state_bytes
        room = available_memory(self.device, config.memory_limit_bytes)
        self.needs_pipeline = self.backbone_bytes > room
        backbone = None
        if self.needs_pipeline:
            log.info(
                "%s: the backbone (%d MiB with a mini-batch) does not fit in %d MiB: its "
                "states will come from a pipeline the coordinator plans",
                config.device_id,
                int(self.backbone_bytes) >> 20,
                int(room) >> 20,
            )
        else:
            backbone, _, _ = load_backbone(config.model_dir)
            backbone.to(self.device)
        tokenizer = AutoTokenizer.from_pretrained(str(config.model_dir))
        self.adapters = side_network(config.model_dir, setup.num_labels, config.seed)
        self.adapters.to(self.device)
        mine = local_split(config, setup.task, shard)
        data = encode(tokenizer, mine, setup.max_seq_length)
        self.sampler = BatchSampler(data, setup.batch_size, seed=config.seed + 1000 * shard)
        cache_key = CacheKey(
            content_digest(config.model_dir),
            setup.task,
            # Which samples, by content: an edited train.tsv must not meet the old states.
            f"{shard}/{config.num_shards}/{config.shard_mode}/{split_digest(mine)}",
            setup.max_seq_length,
            config.cache_storage,
        )
        cache = ActivationCache(
            cache_key,
            config.activation_cache or default_cache_dir("activations"),
            int(config.cache_memory_bytes),
            int(config.cache_disk_bytes),
        )
        self._exported = CacheStats()
        self.states = CachedStates(
            backbone,
            data,
            cache,
            batch_size=self.sampler.batch_size,
            loader=self._load_backbone,
        )
        self._profile()
        self.ratios.clear()
        self._release_if_warm()
        self._export_cache()
        log.info(
            "%s: %d local examples (shard %d/%d); %.0f%% of their states cached; a step costs "
            "%.3f s warm, +%.3f s per mini-batch the backbone must run for",
            config.device_id,
            len(mine),
            shard,
            config.num_shards,
            100 * self.states.cached_fraction(),
            self.warm_s,
            self.fill_s,
        )
        self.setup_key = key

    def _load_backbone(self) -> torch.nn.Module:
        log.info("%s: loading the backbone again (samples not cached)", self.config.device_id)
        backbone, _, _ = load_backbone(self.config.model_dir)
        return backbone.to(self.device)

    def _profile(self) -> None:
        """Seconds and peak bytes of a mini-batch cold and warm (the first batch's states go
        into the cache, as the first epoch would put them)."""
        assert self.states is not None and self.adapters is not None and self.sampler is not None
        states, adapters = self.states, self.adapters
        indices = list(range(self.sampler.batch_size))
        missing = [index for index in indices if index not in states.cache]
        fill_s = 0.0  # unknown when cached before a restart, or without the backbone
        if states.backbone is not None and missing:
            started = time.perf_counter()
            states.fill(missing)
            fill_s = (time.perf_counter() - started) / len(missing) * len(indices)
        if all(index in states.cache for index in indices):
            source: CachedStates = states
        else:  # no backbone here: the step's cost on states of the right size, made up
            source = synthetic_states(states, indices, adapters.shape, self.max_length)
        hidden, _ = source.batch(indices)
        state_bytes = float(hidden.numel() * hidden.element_size())
        step = lambda: adapter_gradient(adapters, source, [indices])  # noqa: E731
        step()  # warm-up: allocator, kernels
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            step()
            timings.append(time.perf_counter() - started)
        slowdown = self.config.slowdown
        self.warm_s = min(timings) * slowdown
        self.fill_s = fill_s * slowdown
        activations = float(saved_bytes(step))
        # Parameters and gradients, a step's saved activations, its batch of states.
        self.warm_bytes = 2.0 * parameter_bytes(adapters) + activations + state_bytes

    def modelled_seconds(self) -> float:
        """Seconds per mini-batch now: warm, plus the backbone for the uncached share."""
        assert self.states is not None
        cold_share = 1.0 - self.states.cached_fraction()
        return (self.warm_s + cold_share * self.fill_s) * self.factor

    def memory_need(self) -> float:
        assert self.states is not None
        return self.warm_bytes + (0.0 if self.states.complete() else self.backbone_bytes)

    def report(self, session: str, round_number: int) -> coordinator_pb2.ResourceReport:
        assert self.states is not None
        reading = self.channel.reading(round_number)
        resident = 0.0 if self.states.backbone is None else self.backbone_bytes
        memory = available_memory(self.device, self.config.memory_limit_bytes, resident)
        self.metrics.memory.labels(self.config.device_id).set(memory)
        self.metrics.efficiency.labels(self.config.device_id).set(reading.spectral_efficiency)
        seconds, need = self.modelled_seconds(), self.memory_need()
        return coordinator_pb2.ResourceReport(
            session=session,
            round=round_number,
            available_memory_bytes=memory,
            compute_factor=self.factor,
            channel=channel_state(reading),
            block_costs=[
                coordinator_pb2.BlockCost(
                    block=slot, seconds_per_iteration=seconds, peak_memory_bytes=need
                )
                for slot in range(1, self.slots + 1)
            ],
            pac=coordinator_pb2.PacState(
                samples=len(self.states.data),
                cached_samples=self.states.cached_count(),
                step_seconds=self.warm_s,
                needs_pipeline=self.needs_pipeline and not self.states.complete(),
            ),
        )

    def train(
        self, instruction: coordinator_pb2.RoundInstruction, weights: dict[str, np.ndarray]
    ) -> TrainedBlock:
        """The round-start side network in, the gradient of all its tensors out."""
        assert self.adapters is not None and self.states is not None and self.sampler is not None
        self._modelled_s = self.modelled_seconds() / self.factor
        self.adapters.load_trainable_state(
            {name: torch.from_numpy(v) for name, v in weights.items()}
        )
        batches = [self._batch() for _ in range(instruction.local_iterations)]
        result = adapter_gradient(
            self.adapters, self.states, batches, slowdown=self.config.slowdown
        )
        self._release_if_warm()
        self._export_cache()
        return TrainedBlock(
            instruction.block,
            {name: gradient.numpy() for name, gradient in result.gradients.items()},
            result.compute_s,
            result.loss,
            result.iterations,
        )

    def _batch(self) -> list[int]:
        """The next mini-batch. A device the backbone does not fit trains on the cached samples
        in it (a state lost since, say to a damaged file, waits for the next pipeline); when it
        has none, the scheduler gave it the backbone's memory (its report asked for it), and
        the backbone is loaded for them."""
        assert self.sampler is not None and self.states is not None
        indices = self.sampler.next_indices().tolist()
        if not self.needs_pipeline:
            return indices
        return [index for index in indices if index in self.states.cache] or indices

    def cache_updated(self) -> None:
        """States arrived from elsewhere (a pipeline): metrics, and the backbone if unneeded."""
        self._release_if_warm()
        self._export_cache()

    def _release_if_warm(self) -> None:
        assert self.states is not None
        had_backbone = self.states.backbone is not None
        if self.states.release_backbone() and had_backbone:
            gc.collect()
            stats = self.states.cache.stats
            log.info(
                "%s: every local sample's states are cached (%d MiB in memory, %d MiB on disk): "
                "the backbone is released, steps run the side network alone",
                self.config.device_id,
                stats.memory_bytes >> 20,
                stats.disk_bytes >> 20,
            )

    def _export_cache(self) -> None:
        assert self.states is not None
        stats, device = self.states.cache.stats, self.config.device_id
        metrics = self.metrics
        metrics.cache_hits.labels(device).inc(stats.hits - self._exported.hits)
        metrics.cache_misses.labels(device).inc(stats.misses - self._exported.misses)
        self._exported = CacheStats(stats.hits, stats.misses)
        metrics.cache_bytes.labels(device, "memory").set(stats.memory_bytes)
        metrics.cache_bytes.labels(device, "disk").set(stats.disk_bytes)
        metrics.cache_samples.labels(device, "memory").set(stats.memory_samples)
        metrics.cache_samples.labels(device, "disk").set(stats.disk_samples)
        metrics.cache_fraction.labels(device).set(self.states.cached_fraction())

    def uploaded(self, trained: TrainedBlock, num_bytes: int, seconds: float) -> None:
        """An accepted upload corrects the compute model (median of the last rounds' measured
        over modelled) and teaches a measured channel its rate."""
        if self._modelled_s > 0:
            self.ratios.append(trained.compute_s / trained.iterations / self._modelled_s)
        if isinstance(self.channel, MeasuredChannel):
            self.channel.record_upload(num_bytes, seconds)

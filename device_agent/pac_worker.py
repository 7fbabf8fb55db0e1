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
import logging
import os
import statistics
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from lola_deft.device_agent.channel import EmulatedChannel, MeasuredChannel
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.profiler import saved_bytes
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
from lola_deft.ml.model import content_digest
from lola_deft.ml.pac_training import CachedStates, adapter_gradient
from lola_deft.ml.parallel_adapters import AdapterShape, ParallelAdapters, load_backbone
from lola_deft.protos.deft.v1 import coordinator_pb2

log = logging.getLogger("deft.agent")
RECENT = 3  # measured rounds the compute correction is the median of


def default_activation_cache() -> Path:
    root = os.environ.get("LOLA_DEFT_CACHE") or os.path.join(Path.home(), ".cache", "lola-deft")
    return Path(root) / "activations"


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


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

        backbone, hidden, layers = load_backbone(config.model_dir)
        backbone.to(self.device)
        tokenizer = AutoTokenizer.from_pretrained(str(config.model_dir))
        torch.manual_seed(config.seed)
        self.adapters = ParallelAdapters(AdapterShape(hidden, layers, setup.num_labels))
        self.adapters.to(self.device)
        mine = local_split(config, setup.task, shard)
        data = encode(tokenizer, mine, setup.max_seq_length)
        self.sampler = BatchSampler(data, setup.batch_size, seed=config.seed + 1000 * shard)
        cache_key = CacheKey(
            content_digest(config.model_dir),
            setup.task,
            f"{shard}/{config.num_shards}/{config.shard_mode}",
            setup.max_seq_length,
            config.cache_storage,
        )
        cache = ActivationCache(
            cache_key,
            config.activation_cache or default_activation_cache(),
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
        self.backbone_bytes = float(parameter_bytes(backbone))
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
        started = time.perf_counter()
        states.fill(missing)
        fill_s = (time.perf_counter() - started) / max(len(missing), 1) * len(indices)
        if not missing:  # cached before a restart: the forward's cost is not measured here
            fill_s = 0.0
        hidden, _ = states.batch(indices)
        state_bytes = float(hidden.numel() * hidden.element_size())
        step = lambda: adapter_gradient(adapters, states, [indices])  # noqa: E731
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
        # A cold step adds the backbone and its forward's output (every layer's states).
        self.backbone_bytes = self.backbone_bytes + 2.0 * state_bytes

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
        batches = [
            self.sampler.next_indices().tolist() for _ in range(instruction.local_iterations)
        ]
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

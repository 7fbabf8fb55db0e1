"""The agent's work: for a training setup from the coordinator, load the model and the local
data shard and profile every block (once per setup); describe this device's resources each
round, with the profile corrected by every accepted upload's measured compute (live_profile);
train an assigned block and return its gradient. No networking here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import psutil
import torch

from lola_deft.device_agent.channel import ChannelReading, EmulatedChannel, MeasuredChannel
from lola_deft.device_agent.live_profile import LiveProfile
from lola_deft.device_agent.metrics import AgentMetrics
from lola_deft.device_agent.profiler import BlockProfile, load_or_measure
from lola_deft.device_agent.settings import AgentConfig
from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import DataError, Split, read_split, shard_indices, task_spec
from lola_deft.ml.model import LoadedModel, LoraSettings, load_model, model_fingerprint
from lola_deft.ml.training import block_gradient
from lola_deft.protos.deft.v1 import coordinator_pb2
from lola_deft.protos.tensor_stream import ALLOWED_DTYPES

log = logging.getLogger("deft.agent")


class DeviceUnavailable(RuntimeError):
    """The requested training device does not exist on this machine."""


class SetupError(ValueError):
    """The coordinator's training setup asks for something this agent cannot do."""


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda requested, but CUDA is not available to torch")
    return torch.device(choice)


def available_memory(device: torch.device, limit: float | None, resident: float = 0.0) -> float:
    """Memory the training device has for a block's peak, capped by --memory-limit to emulate
    smaller hardware. A block's profiled peak includes the model's weights, which are already
    loaded (`resident` bytes) and so no longer free: they are added back, or they would count
    twice."""
    if device.type == "cuda":
        free = float(torch.cuda.mem_get_info(device)[0])
    else:
        free = float(psutil.virtual_memory().available)
    total = free + resident
    return min(total, limit) if limit else total


def channel_state(reading: ChannelReading) -> coordinator_pb2.ChannelState:
    return coordinator_pb2.ChannelState(
        channel_gain=reading.channel_gain,
        snr_db=reading.snr_db,
        spectral_efficiency=reading.spectral_efficiency,
        measured_uplink_bps=reading.measured_uplink_bps,
    )


def shard_of(config: AgentConfig, setup: coordinator_pb2.RegisterResponse) -> int:
    """This agent's data shard: --shard I/N, or for --shard auto/N its registration order."""
    if config.shard < 0:
        return setup.agent_index % config.num_shards
    return config.shard


def upload_dtype_of(setup: coordinator_pb2.RegisterResponse) -> str:
    """The dtype the coordinator wants uploads in (empty: one that predates the field)."""
    dtype = setup.upload_dtype or "float32"
    if dtype not in ALLOWED_DTYPES:
        raise SetupError(
            f"the coordinator asks for {dtype!r} uploads; this agent sends "
            f"{', '.join(ALLOWED_DTYPES)} (upgrade it)"
        )
    return dtype


def local_split(config: AgentConfig, task: str, shard: int) -> Split:
    """This device's own training examples: its shard of its local copy of the task."""
    spec = task_spec(task)
    train = read_split(config.data_dir, spec, "train")
    return train.subset(
        shard_indices(train.labels, config.num_shards, shard, mode=config.shard_mode, seed=17)
    )


@dataclass
class TrainedBlock:
    block: int
    gradients: dict[str, np.ndarray]
    compute_s: float
    loss: float
    iterations: int


class BlockWorker:
    def __init__(self, config: AgentConfig, metrics: AgentMetrics) -> None:
        self.config = config
        self.metrics = metrics
        # Fail fast, before contacting anyone, on folders that cannot work.
        self.fingerprint = model_fingerprint(config.model_dir)
        if not (config.data_dir / "train.tsv").is_file():
            raise DataError(f"{config.data_dir}/train.tsv: no such file (need a GLUE task folder)")
        self.device = resolve_device(config.device)
        self.channel = (
            MeasuredChannel()
            if config.channel == "measured"
            else EmulatedChannel(
                config.transmit_snr_db, config.path_loss, config.seed, config.device_id
            )
        )
        self.loaded: LoadedModel | None = None
        self.sampler: BatchSampler | None = None
        self.profile: BlockProfile | None = None
        self.live: LiveProfile | None = None
        self.weight_bytes = 0.0  # the loaded model's parameters, on the training device
        self.upload_dtype = "float32"  # as the coordinator's training setup asks
        self.setup_key: tuple[object, ...] | None = None

    @property
    def capabilities(self) -> list[str]:
        return ["cuda"] if self.device.type == "cuda" else ["cpu"]

    def prepare(self, setup: coordinator_pb2.RegisterResponse) -> None:
        """Load model, local data shard and profile once per training setup."""
        lora = LoraSettings(setup.lora_rank, setup.lora_alpha, tuple(setup.lora_target_modules))
        shard = shard_of(self.config, setup)
        self.upload_dtype = upload_dtype_of(setup)
        key = (lora, setup.task, setup.num_labels, setup.batch_size, setup.max_seq_length, shard)
        if key == self.setup_key:
            return
        config = self.config
        log.info("%s: loading the model and data for %s", config.device_id, setup.task)
        self.loaded = load_model(config.model_dir, setup.num_labels, lora, seed=config.seed)
        self.loaded.model.to(self.device)
        self.weight_bytes = float(self.loaded.weight_bytes())
        mine = local_split(config, setup.task, shard)
        data = encode(self.loaded.tokenizer, mine, setup.max_seq_length)
        self.sampler = BatchSampler(data, setup.batch_size, seed=config.seed + 1000 * shard)
        identity = {
            "model": str(config.model_dir),
            "fingerprint": self.fingerprint,
            "lora": [lora.rank, lora.alpha, list(lora.targets)],
            "labels": setup.num_labels,
            "batch": self.sampler.batch_size,
            "seq": setup.max_seq_length,
        }
        log.info(
            "%s: profiling %d blocks (time and peak memory per block)",
            config.device_id,
            self.loaded.num_blocks,
        )
        self.profile, cached = load_or_measure(
            self.loaded,
            self.sampler.next_batch(),
            self.device,
            identity,
            cache_dir=config.profile_cache,
            slowdown=config.slowdown,
        )
        self.live = LiveProfile(self.profile.seconds_per_iteration)
        for block, peak in enumerate(self.profile.peak_memory_bytes, start=1):
            self.metrics.block_memory.labels(config.device_id, str(block)).set(peak)
        self._export_seconds()
        log.info(
            "%s: %d local examples (shard %d/%d, %s); profile %s: %s s/iteration per block",
            config.device_id,
            len(mine),
            shard,
            config.num_shards,
            config.shard_mode,
            "cached" if cached else "measured",
            " ".join(f"{s:.3f}" for s in self.profile.seconds_per_iteration),
        )
        self.setup_key = key

    def _export_seconds(self) -> None:
        assert self.live is not None
        for block, value in enumerate(self.live.seconds(), start=1):
            self.metrics.block_seconds.labels(self.config.device_id, str(block)).set(value)
        self.metrics.compute_factor.labels(self.config.device_id).set(self.live.factor)

    def report(self, session: str, round_number: int) -> coordinator_pb2.ResourceReport:
        assert self.profile is not None and self.live is not None
        reading = self.channel.reading(round_number)
        memory = available_memory(self.device, self.config.memory_limit_bytes, self.weight_bytes)
        self.metrics.memory.labels(self.config.device_id).set(memory)
        self.metrics.efficiency.labels(self.config.device_id).set(reading.spectral_efficiency)
        return coordinator_pb2.ResourceReport(
            session=session,
            round=round_number,
            available_memory_bytes=memory,
            compute_factor=self.live.factor,
            channel=channel_state(reading),
            block_costs=[
                coordinator_pb2.BlockCost(block=b + 1, seconds_per_iteration=s, peak_memory_bytes=m)
                for b, (s, m) in enumerate(
                    zip(self.live.seconds(), self.profile.peak_memory_bytes, strict=True)
                )
            ],
        )

    def train(
        self, instruction: coordinator_pb2.RoundInstruction, weights: dict[str, np.ndarray]
    ) -> TrainedBlock:
        """The round-start adapters in, this block's gradient out (and the head's, unless the
        coordinator says skip_head)."""
        assert self.loaded is not None and self.sampler is not None
        self.loaded.load_trainable_state(weights)
        result = block_gradient(
            self.loaded,
            instruction.block,
            self.sampler.take(instruction.local_iterations),
            device=self.device,
            slowdown=self.config.slowdown,
            head=not instruction.skip_head,
        )
        gradients = {name: g.numpy() for name, g in result.gradients.items()}
        return TrainedBlock(
            instruction.block,
            gradients,
            result.compute_s,
            result.loss,
            result.iterations,
        )

    def uploaded(self, trained: TrainedBlock, num_bytes: int, seconds: float) -> None:
        """An accepted upload teaches the profile its block's real compute time and a measured
        channel its rate."""
        if self.live is not None:
            self.live.record(trained.block, trained.compute_s / trained.iterations)
            self._export_seconds()
        if isinstance(self.channel, MeasuredChannel):
            self.channel.record_upload(num_bytes, seconds)

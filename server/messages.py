"""The coordinator's own types: what crosses between the wire layer, the round engine, the
allocator and everything that reads a round's record. No protobuf, no gRPC: `wire.py`
converts these to and from the deft.v1 messages.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Registration:
    """What a device asks when it joins."""

    device_id: str
    hardware: str
    agent_version: str
    capabilities: tuple[str, ...]
    model_fingerprint: str


@dataclass(frozen=True)
class ResourceReport:
    """One device's state for a round: memory, channel and per-block cost (block 1 first)."""

    device_id: str
    round: int
    available_memory_bytes: float
    channel_gain: float
    snr_db: float
    spectral_efficiency: float
    measured_uplink_bps: float
    block_seconds: tuple[float, ...]
    block_memory_bytes: tuple[float, ...]
    pac: PacReport | None = None  # --method pac: the device's samples and cache


@dataclass(frozen=True)
class PacReport:
    """A PAC+ device's samples, how many have cached states, its side network's step time,
    and whether the backbone fits it (if not, only a pipeline can fill its cache)."""

    samples: int
    cached_samples: int
    step_seconds: float
    needs_pipeline: bool

    @property
    def cold(self) -> bool:
        return self.cached_samples < self.samples


@dataclass(frozen=True)
class Instruction:
    """What a reporting device does this round; block 0 means sit it out."""

    round: int
    block: int = 0
    bandwidth_hz: float = 0.0
    local_iterations: int = 0
    deadline_unix_s: float = 0.0
    finished: bool = False
    modelled_latency_s: float = 0.0
    skip_head: bool = False  # compute and upload the block's gradient only (head_training)
    pipeline: PipelineTask | None = None  # PAC+: a stage of a cache-filling pipeline instead


@dataclass(frozen=True)
class PipelineTask:
    """One device's stage in a pipeline that fills an owner's activation cache."""

    job: str
    owner: bool
    first_unit: int
    last_unit: int
    units: int
    micro_batches: int
    micro_batch_size: int
    max_length: int
    dtype: str
    deadline_unix_s: float


@dataclass(frozen=True)
class UploadHeader:
    """Opens every gradient stream; checked before a byte of gradient is buffered."""

    session: str
    round: int
    block: int
    compute_s: float
    train_loss: float


@dataclass(frozen=True)
class UploadPlan:
    """What the coordinator will accept on a stream whose header passed: exactly these tensors.
    `duplicate` marks a retry of an upload already taken (acknowledged, not applied twice)."""

    device_id: str
    block: int
    shapes: dict[str, tuple[int, ...]]
    duplicate: bool = False
    received_bytes: int = 0
    deadline: float = math.inf  # time.monotonic() value by which the stream must be complete

    @property
    def max_bytes(self) -> int:
        return sum(4 * int(np.prod(shape, dtype=np.int64)) for shape in self.shapes.values())


@dataclass
class Upload:
    """One device's accepted gradient for a round."""

    device_id: str
    block: int
    tensors: dict[str, np.ndarray]
    compute_s: float
    upload_s: float
    num_bytes: int
    train_loss: float


@dataclass(frozen=True)
class UploadAck:
    round: int
    block: int
    received_bytes: int
    duplicate: bool


# -- the allocator's language ------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceOffer:
    """A device as the scheduler sees it."""

    id: str
    memory_bytes: float
    spectral_efficiency: float
    block_seconds: tuple[float, ...]


@dataclass(frozen=True)
class AllocationRequest:
    policy: str
    blocks: int
    block_memory_bytes: tuple[float, ...]
    local_iterations: int
    payload_bits: float
    bandwidth_hz: float
    devices: tuple[DeviceOffer, ...]
    seed: int

    def instance_doc(self) -> dict[str, Any]:
        """The scheduler's instance JSON (`deft schedule`'s input) for this request."""
        return {
            "blocks": self.blocks,
            "block_memory_bytes": list(self.block_memory_bytes),
            "local_iterations": self.local_iterations,
            "payload_bits": self.payload_bits,
            "bandwidth_hz": self.bandwidth_hz,
            "devices": [
                {
                    "id": device.id,
                    "memory_bytes": device.memory_bytes,
                    "spectral_efficiency": device.spectral_efficiency,
                    "block_seconds": list(device.block_seconds),
                }
                for device in self.devices
            ],
        }


@dataclass(frozen=True)
class Assignment:
    block: int
    device: str
    bandwidth_hz: float
    latency_s: float
    compute_s: float
    upload_s: float


@dataclass(frozen=True)
class Allocation:
    policy: str
    latency_s: float
    solve_seconds: float
    assignment: tuple[Assignment, ...]
    source: str = "service"  # "service", or "fallback" when solved in-process during an outage

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Allocation:
        """From the scheduler's JSON answer (`deft schedule`'s output)."""
        return cls(
            policy=str(doc["policy"]),
            latency_s=float(doc["latency_s"]),
            solve_seconds=float(doc["solve_seconds"]),
            assignment=tuple(Assignment(**entry) for entry in doc["assignment"]),
        )


# -- the round record: what history.json, metrics, progress, demo, testbed and bench read -------
@dataclass
class AssignmentRecord:
    block: int
    device: str
    bandwidth_hz: float
    modelled_latency_s: float
    modelled_compute_s: float
    modelled_upload_s: float
    compute_s: float | None = None  # measured; None when no upload arrived
    upload_s: float | None = None
    grad_norm: float | None = None  # the accepted upload's total L2 norm


@dataclass
class Reassignment:
    """A block handed, within its round, from a device that failed it to an idle one."""

    block: int
    from_device: str
    to_device: str
    reason: str  # why the first device failed
    at_s: float  # seconds into the round
    kind: str = "other"  # the failure's FAILURE_KINDS entry (a metric label)


# Why a device did not deliver its block: it stopped responding, missed its deadline, had its
# upload refused, or its upload stream broke.
FAILURE_KINDS = ("died", "late", "refused", "broken")


@dataclass
class Refusal:
    """A device that did not deliver its block: `kind` is one of FAILURE_KINDS, `reason` says
    it in words (a refusal's, the error)."""

    device: str
    block: int
    reason: str
    kind: str = "other"  # histories written before kinds existed


@dataclass
class Evaluation:
    metric_name: str
    metric: float
    loss: float
    scores: dict[str, float] = field(default_factory=dict)  # every metric of the task

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Evaluation:
        scores = {k: float(v) for k, v in doc.items() if k not in ("metric_name", "metric", "loss")}
        return cls(str(doc["metric_name"]), float(doc["metric"]), float(doc["loss"]), scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric_name": self.metric_name,
            "metric": self.metric,
            "loss": self.loss,
            **self.scores,
        }


@dataclass
class ClaimClamp:
    """A report's block cost the coordinator did not believe: the device claimed `claimed`
    seconds per iteration of `block`, far faster than its evidence, and was scheduled at
    `used` (see server/claims.py)."""

    device: str
    evidence: str
    block: int
    claimed: float
    used: float


@dataclass
class RoundRecord:
    round: int
    policy: str
    modelled_latency_s: float
    measured_wall_s: float
    solve_seconds: float
    reported_devices: int
    assignment: list[AssignmentRecord]
    blocks_updated: list[int]
    train_loss: float | None
    eval: Evaluation | None = None
    coordinator_s: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    reassignments: list[Reassignment] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    rolled_back: bool = False  # the step made the model non-finite and was undone
    allocator: str = "service"  # who solved the round: the scheduler "service" or "fallback"
    head_blocks: list[int] = field(default_factory=list)  # whose uploads carried the head
    clamped: list[ClaimClamp] = field(default_factory=list)  # claims scheduled as evidence says

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["eval"]
        if self.eval is not None:  # only evaluated rounds carry "eval"
            doc["eval"] = self.eval.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RoundRecord:
        values = dict(doc)
        values["assignment"] = [AssignmentRecord(**a) for a in doc["assignment"]]
        values["reassignments"] = [Reassignment(**r) for r in doc.get("reassignments", [])]
        values["refusals"] = [Refusal(**r) for r in doc.get("refusals", [])]
        values["clamped"] = [ClaimClamp(**c) for c in doc.get("clamped", [])]
        values["eval"] = Evaluation.from_dict(doc["eval"]) if doc.get("eval") else None
        return cls(**values)


@dataclass
class RunHistory:
    """history.json: the evaluation before training and one record per round."""

    baseline: Evaluation | None
    rounds: list[RoundRecord]

    _settled: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Records are converted once: all but the newest are final (its phase timings may
        still grow), so a long run does not re-convert its whole history every round."""
        while len(self._settled) < len(self.rounds) - 1:
            self._settled.append(self.rounds[len(self._settled)].to_dict())
        del self._settled[max(len(self.rounds) - 1, 0) :]
        newest = [self.rounds[-1].to_dict()] if self.rounds else []
        return {
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "rounds": [*self._settled, *newest],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunHistory:
        baseline = doc.get("baseline")
        return cls(
            Evaluation.from_dict(baseline) if baseline else None,
            [RoundRecord.from_dict(r) for r in doc.get("rounds", [])],
        )

    def final_metric(self) -> float | None:
        evaluated = [r.eval.metric for r in self.rounds if r.eval is not None]
        return evaluated[-1] if evaluated else None


@dataclass(frozen=True)
class Welcome:
    """The coordinator's answer to a registration: the session and the training setup."""

    session: str
    heartbeat_interval_s: float
    model_name: str
    lora_rank: int
    lora_alpha: float
    lora_target_modules: tuple[str, ...]
    blocks: int
    task: str
    num_labels: int
    batch_size: int
    max_seq_length: int
    round: int
    agent_index: int
    upload_dtype: str = "float32"  # how gradients travel (tensor_stream.ALLOWED_DTYPES)
    method: str = "lola"  # what agents train: LoRA blocks, or "pac" (PAC+'s parallel adapters)

"""PAC+'s two plans: the pipeline that fills the activation cache, and the data-parallel shares
of the cached epochs. Both exact (tested against brute force on small instances).

**Pipeline** (first epoch, for a device that cannot hold the backbone, or gains from help): the
backbone's units (embeddings, then layers 1..L) are cut into contiguous stages, each on its own
device, for the samples of one owner. Raw data never leaves the owner, so the owner runs the
first stage (the embeddings at least). A stage's time per micro-batch is its compute (the units'
reference seconds times the device's compute factor) plus what it uploads: a helper uploads the
states of every unit it ran (the coordinator forwards the last to the next stage and all of them
to the owner, who caches them); the owner uploads only its last state, and nothing when it runs
every unit. The owner also downloads the helpers' states, which takes its own time. A stage must
fit its device: the units' weights plus the working memory of a micro-batch. The plan minimises
the slowest of these, which bounds the pipeline's throughput. Exact: a binary search over the
candidate bottlenecks, each checked by a dynamic program over subsets of helpers (for a
bottleneck T, the furthest unit a set of helpers can reach, in any order, is the best any of
them reaches when it goes last, because how far a helper reaches never falls when it starts
later); 2^K states, so the planner considers the MAX_PIPELINE_DEVICES helpers with the most
memory.

**Shares** (every later epoch): n_k samples of device k's own data per round, at most its
cap, summing to the round's total, minimising max_k (u_k + n_k t_k) over the devices that take
part (u_k: its fixed cost, the adapters' download and the gradient's upload; t_k: seconds per
sample). Exact for unit samples: each sample goes to the device that would finish it first.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from lola_deft.scheduler.errors import InfeasibleError, InstanceError

MAX_PIPELINE_DEVICES = 10
MAX_UNITS = 128  # embeddings + 127 layers: beyond any encoder we serve


@dataclass(frozen=True)
class PipelineDevice:
    device_id: str
    memory_bytes: float
    compute_factor: float  # seconds = reference seconds x factor
    uplink_bps: float  # bits per second


@dataclass(frozen=True)
class PipelineInstance:
    unit_seconds: tuple[float, ...]  # per micro-batch on the reference device, unit 0 first
    unit_bytes: tuple[float, ...]  # weights each unit needs resident
    activation_bits: float  # one unit's output for one micro-batch
    working_bytes: float  # a stage's memory beyond its weights (activations of a micro-batch)
    devices: tuple[PipelineDevice, ...]
    owner: str  # the device whose samples flow through: it runs the first stage

    def __post_init__(self) -> None:
        units = len(self.unit_seconds)
        if units == 0 or units > MAX_UNITS or len(self.unit_bytes) != units:
            raise InstanceError("unit_bytes", f"need one entry per unit, and 1..{MAX_UNITS} units")
        for name in ("unit_seconds", "unit_bytes"):
            if any(not math.isfinite(v) or v < 0 for v in getattr(self, name)):
                raise InstanceError(name, "must be finite and >= 0")
        for name in ("activation_bits", "working_bytes"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InstanceError(name, "must be finite and >= 0")
        if not self.devices:
            raise InstanceError("devices", "need at least one device")
        if len({d.device_id for d in self.devices}) != len(self.devices):
            raise InstanceError("devices", "device ids must be unique")
        if self.owner not in {d.device_id for d in self.devices}:
            raise InstanceError("owner", "must be one of the devices")
        for device in self.devices:
            if not (math.isfinite(device.compute_factor) and device.compute_factor > 0):
                raise InstanceError("compute_factor", f"{device.device_id}: must be > 0")
            if not (math.isfinite(device.uplink_bps) and device.uplink_bps > 0):
                raise InstanceError("uplink_bps", f"{device.device_id}: must be > 0")
            if not (math.isfinite(device.memory_bytes) and device.memory_bytes >= 0):
                raise InstanceError("memory_bytes", f"{device.device_id}: must be >= 0")

    @cached_property
    def seconds_prefix(self) -> tuple[float, ...]:
        return tuple(itertools.accumulate(self.unit_seconds, initial=0.0))

    @cached_property
    def bytes_prefix(self) -> tuple[float, ...]:
        return tuple(itertools.accumulate(self.unit_bytes, initial=0.0))

    def seconds_of(self, first: int, last: int) -> float:
        return self.seconds_prefix[last + 1] - self.seconds_prefix[first]

    def bytes_of(self, first: int, last: int) -> float:
        return self.bytes_prefix[last + 1] - self.bytes_prefix[first]

    @property
    def owner_device(self) -> PipelineDevice:
        return next(d for d in self.devices if d.device_id == self.owner)

    @property
    def helpers(self) -> tuple[PipelineDevice, ...]:
        return tuple(d for d in self.devices if d.device_id != self.owner)


def stage_seconds(
    instance: PipelineInstance, device: PipelineDevice, first: int, last: int
) -> float:
    """A helper's stage: compute, and the upload of every state it produced."""
    compute = instance.seconds_of(first, last) * device.compute_factor
    upload = (last - first + 1) * instance.activation_bits / device.uplink_bps
    return compute + upload


def owner_seconds(instance: PipelineInstance, last: int) -> float:
    """The owner's stage (units 0..last): compute, its last state's upload when helpers go on,
    or, when that is longer, the download of the states the helpers send back."""
    owner, units = instance.owner_device, len(instance.unit_seconds)
    compute = instance.seconds_of(0, last) * owner.compute_factor
    if last == units - 1:
        return compute
    rate = owner.uplink_bps
    return max(
        compute + instance.activation_bits / rate,
        (units - 1 - last) * instance.activation_bits / rate,
    )


def stage_fits(instance: PipelineInstance, device: PipelineDevice, first: int, last: int) -> bool:
    needed = instance.bytes_of(first, last) + instance.working_bytes
    return needed <= device.memory_bytes


@dataclass(frozen=True)
class Stage:
    device_id: str
    first_unit: int
    last_unit: int  # inclusive
    seconds: float  # per micro-batch (the owner's: see owner_seconds)


@dataclass(frozen=True)
class PipelinePlan:
    stages: tuple[Stage, ...]

    @property
    def bottleneck_s(self) -> float:
        return max(stage.seconds for stage in self.stages)


def _reach_table(
    instance: PipelineInstance, devices: Sequence[PipelineDevice], bottleneck: float
) -> list[list[int]]:
    """reach[k][first]: the first unit helper k cannot take when its stage starts at `first`
    (non-decreasing in `first`, which makes the subset program below exact)."""
    units = len(instance.unit_seconds)
    table = []
    for device in devices:
        row, last = [], -1
        for first in range(units):
            last = max(last, first - 1)
            while last + 1 < units and stage_fits(instance, device, first, last + 1):
                if stage_seconds(instance, device, first, last + 1) > bottleneck:
                    break
                last += 1
            row.append(last + 1)
        table.append([*row, units])
    return table


def _cover(
    instance: PipelineInstance, devices: Sequence[PipelineDevice], start: int, bottleneck: float
) -> list[tuple[int, int, int]] | None:
    """Helper stages (index, first, last) covering units start.. within `bottleneck`, or None."""
    count, units = len(devices), len(instance.unit_seconds)
    reach = _reach_table(instance, devices, bottleneck)
    reached = [-1] * (1 << count)  # the furthest unit boundary each helper set reaches
    came_from: list[tuple[int, int] | None] = [None] * (1 << count)
    reached[0] = start
    for mask in range(1 << count):
        begin = reached[mask]
        if begin < 0:
            continue
        if begin >= units:
            stages = []
            while mask:
                previous, device = came_from[mask]  # type: ignore[misc]
                stages.append((device, reached[previous], reached[mask] - 1))
                mask = previous
            return stages[::-1]
        for device in range(count):
            bit = 1 << device
            if mask & bit:
                continue
            end = reach[device][begin]
            if end > begin and end > reached[mask | bit]:
                reached[mask | bit], came_from[mask | bit] = end, (mask, device)
    return None


def _plan_within(
    instance: PipelineInstance, helpers: Sequence[PipelineDevice], bottleneck: float
) -> list[Stage] | None:
    """Stages within `bottleneck`: the owner's longest feasible first stage, then helpers. Only
    the longest needs trying: helpers starting later reach at least as far."""
    owner, units = instance.owner_device, len(instance.unit_seconds)
    feasible = [
        last
        for last in range(units)
        if stage_fits(instance, owner, 0, last) and owner_seconds(instance, last) <= bottleneck
    ]
    if not feasible:
        return None
    last = feasible[-1]
    first = Stage(owner.device_id, 0, last, owner_seconds(instance, last))
    if last == units - 1:
        return [first]
    rest = _cover(instance, helpers, last + 1, bottleneck)
    if rest is None:
        return None
    return [first] + [
        Stage(helpers[d].device_id, a, b, stage_seconds(instance, helpers[d], a, b))
        for d, a, b in rest
    ]


def plan_pipeline(instance: PipelineInstance) -> PipelinePlan:
    """The stages minimising the slowest one; InfeasibleError when the owner and its helpers'
    memory cannot hold the backbone at all."""
    helpers = sorted(instance.helpers, key=lambda d: -d.memory_bytes)[:MAX_PIPELINE_DEVICES]
    units = len(instance.unit_seconds)
    candidates = {owner_seconds(instance, last) for last in range(units)}
    candidates |= {
        stage_seconds(instance, device, first, last)
        for device in helpers
        for first in range(1, units)
        for last in range(first, units)
    }
    ordered = sorted(candidates)
    best = _plan_within(instance, helpers, ordered[-1])
    if best is None:
        raise InfeasibleError(
            f"the memory of {instance.owner} and {len(helpers)} helpers cannot hold the "
            f"backbone's {units} units even split across all of them"
        )
    low, high = 0, len(ordered) - 1  # ordered[high] is feasible
    while low < high:
        middle = (low + high) // 2
        stages = _plan_within(instance, helpers, ordered[middle])
        if stages is None:
            low = middle + 1
        else:
            high, best = middle, stages
    return PipelinePlan(tuple(best))


@dataclass(frozen=True)
class SharesPlan:
    shares: tuple[int, ...]
    makespan_s: float


def plan_shares(
    seconds_per_sample: Sequence[float],
    fixed_seconds: Sequence[float],
    caps: Sequence[int],
    total: int,
) -> SharesPlan:
    """Samples per device (at most its cap, summing to `total`) minimising the slowest device's
    time u_k + n_k t_k, counted only for devices that take part."""
    count = len(seconds_per_sample)
    if not (count == len(fixed_seconds) == len(caps)) or count == 0:
        raise InstanceError("devices", "need one speed, fixed cost and cap per device")
    for name, values in (
        ("seconds_per_sample", seconds_per_sample),
        ("fixed_seconds", fixed_seconds),
    ):
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise InstanceError(name, "must be finite and >= 0")
    if any(cap < 0 for cap in caps) or total < 0:
        raise InstanceError("caps", "must be >= 0")
    if sum(caps) < total:
        raise InfeasibleError(f"the devices hold {sum(caps)} samples, the round needs {total}")
    shares = [0] * count
    # Each device's finish time if it takes one more sample.
    heap = [(fixed_seconds[k] + seconds_per_sample[k], k) for k in range(count) if caps[k] > 0]
    heapq.heapify(heap)
    makespan = 0.0
    for _ in range(total):
        finish, k = heapq.heappop(heap)
        shares[k] += 1
        makespan = max(makespan, finish)
        if shares[k] < caps[k]:
            heapq.heappush(heap, (finish + seconds_per_sample[k], k))
    return SharesPlan(tuple(shares), makespan)

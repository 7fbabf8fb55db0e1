from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceReport(_message.Message):
    __slots__ = ("id", "memory_bytes", "compute_factor", "spectral_efficiency", "block_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    SPECTRAL_EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    memory_bytes: float
    compute_factor: float
    spectral_efficiency: float
    block_seconds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., memory_bytes: _Optional[float] = ..., compute_factor: _Optional[float] = ..., spectral_efficiency: _Optional[float] = ..., block_seconds: _Optional[_Iterable[float]] = ...) -> None: ...

class AllocateRequest(_message.Message):
    __slots__ = ("policy", "blocks", "block_memory_bytes", "block_seconds", "local_iterations", "payload_bits", "bandwidth_hz", "devices", "seed")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BITS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_HZ_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    policy: str
    blocks: int
    block_memory_bytes: _containers.RepeatedScalarFieldContainer[float]
    block_seconds: _containers.RepeatedScalarFieldContainer[float]
    local_iterations: int
    payload_bits: float
    bandwidth_hz: float
    devices: _containers.RepeatedCompositeFieldContainer[DeviceReport]
    seed: int
    def __init__(self, policy: _Optional[str] = ..., blocks: _Optional[int] = ..., block_memory_bytes: _Optional[_Iterable[float]] = ..., block_seconds: _Optional[_Iterable[float]] = ..., local_iterations: _Optional[int] = ..., payload_bits: _Optional[float] = ..., bandwidth_hz: _Optional[float] = ..., devices: _Optional[_Iterable[_Union[DeviceReport, _Mapping]]] = ..., seed: _Optional[int] = ...) -> None: ...

class BlockAssignment(_message.Message):
    __slots__ = ("block", "device", "bandwidth_hz", "latency_s", "compute_s", "upload_s")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_HZ_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_S_FIELD_NUMBER: _ClassVar[int]
    block: int
    device: str
    bandwidth_hz: float
    latency_s: float
    compute_s: float
    upload_s: float
    def __init__(self, block: _Optional[int] = ..., device: _Optional[str] = ..., bandwidth_hz: _Optional[float] = ..., latency_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., upload_s: _Optional[float] = ...) -> None: ...

class AllocateResponse(_message.Message):
    __slots__ = ("policy", "latency_s", "assignment", "solve_seconds")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    latency_s: float
    assignment: _containers.RepeatedCompositeFieldContainer[BlockAssignment]
    solve_seconds: float
    def __init__(self, policy: _Optional[str] = ..., latency_s: _Optional[float] = ..., assignment: _Optional[_Iterable[_Union[BlockAssignment, _Mapping]]] = ..., solve_seconds: _Optional[float] = ...) -> None: ...

class PipelineDevice(_message.Message):
    __slots__ = ("id", "memory_bytes", "compute_factor", "uplink_bps")
    ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    UPLINK_BPS_FIELD_NUMBER: _ClassVar[int]
    id: str
    memory_bytes: float
    compute_factor: float
    uplink_bps: float
    def __init__(self, id: _Optional[str] = ..., memory_bytes: _Optional[float] = ..., compute_factor: _Optional[float] = ..., uplink_bps: _Optional[float] = ...) -> None: ...

class PlanPipelineRequest(_message.Message):
    __slots__ = ("unit_seconds", "unit_bytes", "activation_bits", "working_bytes", "devices", "owner")
    UNIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UNIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BITS_FIELD_NUMBER: _ClassVar[int]
    WORKING_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    unit_seconds: _containers.RepeatedScalarFieldContainer[float]
    unit_bytes: _containers.RepeatedScalarFieldContainer[float]
    activation_bits: float
    working_bytes: float
    devices: _containers.RepeatedCompositeFieldContainer[PipelineDevice]
    owner: str
    def __init__(self, unit_seconds: _Optional[_Iterable[float]] = ..., unit_bytes: _Optional[_Iterable[float]] = ..., activation_bits: _Optional[float] = ..., working_bytes: _Optional[float] = ..., devices: _Optional[_Iterable[_Union[PipelineDevice, _Mapping]]] = ..., owner: _Optional[str] = ...) -> None: ...

class PipelineStage(_message.Message):
    __slots__ = ("device", "first_unit", "last_unit", "seconds")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIT_FIELD_NUMBER: _ClassVar[int]
    LAST_UNIT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    device: str
    first_unit: int
    last_unit: int
    seconds: float
    def __init__(self, device: _Optional[str] = ..., first_unit: _Optional[int] = ..., last_unit: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class PlanPipelineResponse(_message.Message):
    __slots__ = ("stages", "bottleneck_s", "solve_seconds")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    BOTTLENECK_S_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[PipelineStage]
    bottleneck_s: float
    solve_seconds: float
    def __init__(self, stages: _Optional[_Iterable[_Union[PipelineStage, _Mapping]]] = ..., bottleneck_s: _Optional[float] = ..., solve_seconds: _Optional[float] = ...) -> None: ...

class ShareDevice(_message.Message):
    __slots__ = ("id", "seconds_per_sample", "fixed_seconds", "samples")
    ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIXED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    seconds_per_sample: float
    fixed_seconds: float
    samples: int
    def __init__(self, id: _Optional[str] = ..., seconds_per_sample: _Optional[float] = ..., fixed_seconds: _Optional[float] = ..., samples: _Optional[int] = ...) -> None: ...

class PlanSharesRequest(_message.Message):
    __slots__ = ("total_samples", "devices")
    TOTAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    total_samples: int
    devices: _containers.RepeatedCompositeFieldContainer[ShareDevice]
    def __init__(self, total_samples: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[ShareDevice, _Mapping]]] = ...) -> None: ...

class DeviceShare(_message.Message):
    __slots__ = ("device", "samples", "seconds")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    device: str
    samples: int
    seconds: float
    def __init__(self, device: _Optional[str] = ..., samples: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class PlanSharesResponse(_message.Message):
    __slots__ = ("shares", "makespan_s", "solve_seconds")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    MAKESPAN_S_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[DeviceShare]
    makespan_s: float
    solve_seconds: float
    def __init__(self, shares: _Optional[_Iterable[_Union[DeviceShare, _Mapping]]] = ..., makespan_s: _Optional[float] = ..., solve_seconds: _Optional[float] = ...) -> None: ...

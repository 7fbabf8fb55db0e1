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

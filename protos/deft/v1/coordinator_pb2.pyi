from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("device_id", "hardware", "agent_version", "capabilities", "model_fingerprint")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    hardware: str
    agent_version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    model_fingerprint: str
    def __init__(self, device_id: _Optional[str] = ..., hardware: _Optional[str] = ..., agent_version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("session", "heartbeat_interval_s", "model_name", "lora_rank", "lora_target_modules", "blocks", "lora_alpha", "task", "num_labels", "batch_size", "max_seq_length", "round", "agent_index", "upload_dtype", "data_port", "method")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    LORA_TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    LORA_ALPHA_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    session: str
    heartbeat_interval_s: float
    model_name: str
    lora_rank: int
    lora_target_modules: _containers.RepeatedScalarFieldContainer[str]
    blocks: int
    lora_alpha: float
    task: str
    num_labels: int
    batch_size: int
    max_seq_length: int
    round: int
    agent_index: int
    upload_dtype: str
    data_port: int
    method: str
    def __init__(self, session: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., model_name: _Optional[str] = ..., lora_rank: _Optional[int] = ..., lora_target_modules: _Optional[_Iterable[str]] = ..., blocks: _Optional[int] = ..., lora_alpha: _Optional[float] = ..., task: _Optional[str] = ..., num_labels: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., round: _Optional[int] = ..., agent_index: _Optional[int] = ..., upload_dtype: _Optional[str] = ..., data_port: _Optional[int] = ..., method: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class BlockCost(_message.Message):
    __slots__ = ("block", "seconds_per_iteration", "peak_memory_bytes")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_ITERATION_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    block: int
    seconds_per_iteration: float
    peak_memory_bytes: float
    def __init__(self, block: _Optional[int] = ..., seconds_per_iteration: _Optional[float] = ..., peak_memory_bytes: _Optional[float] = ...) -> None: ...

class ChannelState(_message.Message):
    __slots__ = ("channel_gain", "snr_db", "spectral_efficiency", "measured_uplink_bps")
    CHANNEL_GAIN_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    SPECTRAL_EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    MEASURED_UPLINK_BPS_FIELD_NUMBER: _ClassVar[int]
    channel_gain: float
    snr_db: float
    spectral_efficiency: float
    measured_uplink_bps: float
    def __init__(self, channel_gain: _Optional[float] = ..., snr_db: _Optional[float] = ..., spectral_efficiency: _Optional[float] = ..., measured_uplink_bps: _Optional[float] = ...) -> None: ...

class ResourceReport(_message.Message):
    __slots__ = ("session", "round", "available_memory_bytes", "compute_factor", "channel", "block_costs", "pac")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    BLOCK_COSTS_FIELD_NUMBER: _ClassVar[int]
    PAC_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    available_memory_bytes: float
    compute_factor: float
    channel: ChannelState
    block_costs: _containers.RepeatedCompositeFieldContainer[BlockCost]
    pac: PacState
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ..., available_memory_bytes: _Optional[float] = ..., compute_factor: _Optional[float] = ..., channel: _Optional[_Union[ChannelState, _Mapping]] = ..., block_costs: _Optional[_Iterable[_Union[BlockCost, _Mapping]]] = ..., pac: _Optional[_Union[PacState, _Mapping]] = ...) -> None: ...

class PacState(_message.Message):
    __slots__ = ("samples", "cached_samples", "step_seconds", "needs_pipeline")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CACHED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    samples: int
    cached_samples: int
    step_seconds: float
    needs_pipeline: bool
    def __init__(self, samples: _Optional[int] = ..., cached_samples: _Optional[int] = ..., step_seconds: _Optional[float] = ..., needs_pipeline: _Optional[bool] = ...) -> None: ...

class RoundInstruction(_message.Message):
    __slots__ = ("round", "block", "bandwidth_hz", "local_iterations", "deadline_unix_s", "finished", "modelled_latency_s", "skip_head", "pipeline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_HZ_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    MODELLED_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SKIP_HEAD_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    block: int
    bandwidth_hz: float
    local_iterations: int
    deadline_unix_s: float
    finished: bool
    modelled_latency_s: float
    skip_head: bool
    pipeline: PipelineTask
    def __init__(self, round: _Optional[int] = ..., block: _Optional[int] = ..., bandwidth_hz: _Optional[float] = ..., local_iterations: _Optional[int] = ..., deadline_unix_s: _Optional[float] = ..., finished: _Optional[bool] = ..., modelled_latency_s: _Optional[float] = ..., skip_head: _Optional[bool] = ..., pipeline: _Optional[_Union[PipelineTask, _Mapping]] = ...) -> None: ...

class PipelineTask(_message.Message):
    __slots__ = ("job", "owner", "first_unit", "last_unit", "units", "micro_batches", "micro_batch_size", "max_length", "dtype", "deadline_unix_s")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIT_FIELD_NUMBER: _ClassVar[int]
    LAST_UNIT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
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
    def __init__(self, job: _Optional[str] = ..., owner: _Optional[bool] = ..., first_unit: _Optional[int] = ..., last_unit: _Optional[int] = ..., units: _Optional[int] = ..., micro_batches: _Optional[int] = ..., micro_batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., dtype: _Optional[str] = ..., deadline_unix_s: _Optional[float] = ...) -> None: ...

class WeightsRequest(_message.Message):
    __slots__ = ("session", "round")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("name", "shape", "dtype", "offset", "total_bytes", "data", "crc32")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    offset: int
    total_bytes: int
    data: bytes
    crc32: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("session", "round", "block", "compute_s", "train_loss")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    block: int
    compute_s: float
    train_loss: float
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ..., block: _Optional[int] = ..., compute_s: _Optional[float] = ..., train_loss: _Optional[float] = ...) -> None: ...

class GradientPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: TensorChunk
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class StatesHeader(_message.Message):
    __slots__ = ("session", "job", "micro_batch")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    session: str
    job: str
    micro_batch: int
    def __init__(self, session: _Optional[str] = ..., job: _Optional[str] = ..., micro_batch: _Optional[int] = ...) -> None: ...

class StatesPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: StatesHeader
    chunk: TensorChunk
    def __init__(self, header: _Optional[_Union[StatesHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class StatesAck(_message.Message):
    __slots__ = ("job", "micro_batch", "received_bytes")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    job: str
    micro_batch: int
    received_bytes: int
    def __init__(self, job: _Optional[str] = ..., micro_batch: _Optional[int] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class StatesRequest(_message.Message):
    __slots__ = ("session", "job", "micro_batch")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    session: str
    job: str
    micro_batch: int
    def __init__(self, session: _Optional[str] = ..., job: _Optional[str] = ..., micro_batch: _Optional[int] = ...) -> None: ...

class UploadAck(_message.Message):
    __slots__ = ("round", "block", "received_bytes", "duplicate")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    round: int
    block: int
    received_bytes: int
    duplicate: bool
    def __init__(self, round: _Optional[int] = ..., block: _Optional[int] = ..., received_bytes: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class BulkOpen(_message.Message):
    __slots__ = ("upload", "download")
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    upload: UploadHeader
    download: WeightsRequest
    def __init__(self, upload: _Optional[_Union[UploadHeader, _Mapping]] = ..., download: _Optional[_Union[WeightsRequest, _Mapping]] = ...) -> None: ...

class BulkStatus(_message.Message):
    __slots__ = ("code", "details", "ack")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    code: int
    details: str
    ack: UploadAck
    def __init__(self, code: _Optional[int] = ..., details: _Optional[str] = ..., ack: _Optional[_Union[UploadAck, _Mapping]] = ...) -> None: ...

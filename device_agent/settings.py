"""How an agent is configured (the `deft agent` flags fill it in)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from lola_deft.protos.credentials import PLAINTEXT, TlsFiles
from lola_deft.protos.grpc_options import DEFAULT_MAX_MESSAGE_BYTES


@dataclass
class AgentConfig:
    coordinator: str
    device_id: str
    model_dir: Path
    data_dir: Path
    shard: int = 0
    num_shards: int = 1
    shard_mode: str = "iid"
    device: str = "auto"
    memory_limit_bytes: float | None = None
    slowdown: float = 1.0
    channel: str = "emulated"  # or "measured"
    transmit_snr_db: float = 10.0
    path_loss: float = 1e-3
    seed: int = 0
    profile_cache: Path | None = None
    # PAC+'s activation cache (--method pac runs): where its disk part lives (None: the default
    # cache folder's activations/), its budgets, and how states are stored.
    activation_cache: Path | None = None
    cache_memory_bytes: float = 512 * 2**20
    cache_disk_bytes: float = 4 * 2**30
    cache_storage: str = "float16"
    max_backoff_s: float = 30.0
    connect_timeout_s: float = 10.0  # one try at reaching the coordinator
    connect_attempts: int = 5  # tries before giving up at start-up (0: keep trying)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    tls: TlsFiles = PLAINTEXT
    hardware: str = field(default_factory=lambda: f"{platform.machine()}, {os.cpu_count()} CPUs")

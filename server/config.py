"""Everything a coordinator run is configured with (flags and compose fill it in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lola_deft.server.settings import SettingsError, TrainingSettings


@dataclass
class CoordinatorConfig(TrainingSettings):
    rounds: int = 20
    policy: str = "jbba"
    scheduler_address: str = "127.0.0.1:50051"
    # Fail fast: a scheduler that does not answer within this is "down", and the round is
    # solved in-process instead; the service is asked again after scheduler_retry_s.
    scheduler_timeout_s: float = 5.0
    scheduler_retry_s: float = 30.0
    bandwidth_hz: float = 100e6
    # The uplink rate assumed for a device that has not measured its channel yet (and no other
    # device has either): a modest Wi-Fi uplink.
    prior_uplink_bps: float = 20e6
    min_agents: int = 0  # agents the first round waits for; 0: as many as there are blocks
    report_wait_s: float = 2.0
    round_timeout_s: float = 300.0
    # A block holder's own deadline: this many seconds, plus `holder_slack` times the latency
    # its own report predicts (capped by round_timeout_s). A device that takes a block and then
    # stays silent holds the round this long, not round_timeout_s; its block is handed on.
    holder_grace_s: float = 30.0
    holder_slack: float = 3.0
    heartbeat_interval_s: float = 2.0
    liveness_timeout_s: float = 10.0
    # Server-side bounds: a report waits at most this long for its instruction (then "report
    # again"); silent devices are forgotten after forget_after_s; at most max_devices known.
    report_poll_s: float = 120.0
    forget_after_s: float = 600.0
    max_devices: int = 10_000
    # Filled in from the run folder (server/runs.py) by `deft coordinator serve`.
    checkpoint_dir: Path = Path("deft-run/checkpoints")
    resume: bool = False
    history_paths: tuple[Path, ...] = ()  # where the round records are written each round
    # Upload bounds (see gradient_guard): a fixed per-tensor norm bound, and a multiple of the
    # median recent accepted norm; how the head's gradients are combined over devices.
    max_grad_norm: float | None = 1e6  # a sanity bound far above any honest gradient
    grad_norm_factor: float | None = 100.0
    head_aggregation: str = "mean"
    # Gradients travel in this dtype (float16 / bfloat16 halve the upload, S in the model too).
    upload_dtype: str = "float32"
    # Who uploads the head's gradient (server/head_training.py): "every", "one" or "frozen"
    # (after head_warmup_rounds rounds of "every").
    head_training: str = "every"
    head_warmup_rounds: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method == "pac" and self.head_training != "every":
            raise SettingsError(
                f"--head-training {self.head_training} is a LoRA choice: with --method pac every "
                "device uploads the whole side network, head included (use --head-training every)"
            )

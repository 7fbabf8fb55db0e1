"""Prometheus metrics of the coordinator (names follow Prometheus conventions: base units in
the name, `_total` for counters). Each coordinator owns its registry, so several can run in one
process (tests) without clashing."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from lola_deft.protos.metrics_endpoint import new_registry, serve_metrics

ROLE = "coordinator"  # named in the error when its /metrics port is taken


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        r = self.registry
        self.round = Gauge("deft_round", "Rounds completed", registry=r)
        self.rounds = Counter("deft_rounds_total", "Rounds completed since start", registry=r)
        self.round_latency = Gauge(
            "deft_round_latency_seconds",
            "Last round's latency: measured on the wall clock, or modelled by the scheduler "
            "(max_k J_k + S/(B_k r_k))",
            ["kind"],
            registry=r,
        )
        self.round_wall = Histogram(
            "deft_round_wall_seconds",
            "Measured wall-clock round time",
            registry=r,
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
        )
        self.device_block = Gauge(
            "deft_device_block", "Block assigned this round (0: none)", ["device"], registry=r
        )
        self.device_bandwidth = Gauge(
            "deft_device_bandwidth_hz", "Uplink bandwidth allotted", ["device"], registry=r
        )
        self.device_compute = Gauge(
            "deft_device_compute_seconds",
            "Measured compute time of the device's block this round",
            ["device"],
            registry=r,
        )
        self.device_upload = Gauge(
            "deft_device_upload_seconds",
            "Measured gradient upload time this round",
            ["device"],
            registry=r,
        )
        self.device_modelled = Gauge(
            "deft_device_modelled_latency_seconds",
            "Scheduler's modelled compute + upload time",
            ["device"],
            registry=r,
        )
        self.device_memory = Gauge(
            "deft_device_memory_bytes", "Available memory reported", ["device"], registry=r
        )
        self.device_efficiency = Gauge(
            "deft_device_spectral_efficiency",
            "Uplink spectral efficiency r_k = log2(1 + SNR_k), in bit/s/Hz",
            ["device"],
            registry=r,
        )
        self.bytes = Counter("deft_bytes_total", "Payload bytes moved", ["direction"], registry=r)
        self.loss = Gauge("deft_training_loss", "Mean training loss reported by agents", registry=r)
        self.eval_metric = Gauge(
            "deft_eval_metric", "Evaluation metric on the dev split", ["metric"], registry=r
        )
        self.eval_loss = Gauge("deft_eval_loss", "Evaluation loss on the dev split", registry=r)
        self.eval_set_loss = Gauge(
            "deft_eval_set_loss",
            "Evaluation loss on the task's further evaluation sets (MNLI: mismatched)",
            ["set"],
            registry=r,
        )
        self.solve = Gauge(
            "deft_scheduler_solve_seconds", "Scheduler's solve time this round", registry=r
        )
        self.scheduler_call = Gauge(
            "deft_scheduler_request_seconds", "Round trip of the Allocate RPC", registry=r
        )
        self.live_agents = Gauge("deft_live_agents", "Agents with a recent heartbeat", registry=r)
        self.scheduler_available = Gauge(
            "deft_scheduler_available",
            "1 while the scheduler service answers, 0 while rounds are solved in-process",
            registry=r,
        )
        self.fallback_rounds = Counter(
            "deft_scheduler_fallback_rounds_total",
            "Rounds solved in-process because the scheduler service was down",
            registry=r,
        )
        self.reassignments = Counter(
            "deft_block_reassignments_total",
            "Blocks handed within their round to another device",
            ["reason"],
            registry=r,
        )
        self.failed_blocks = Counter(
            "deft_block_failures_total",
            "Blocks a device did not deliver (died, missed its deadline, upload refused)",
            ["reason"],
            registry=r,
        )
        self.rollbacks = Counter(
            "deft_rolled_back_steps_total",
            "Optimizer steps undone because they made the model non-finite",
            registry=r,
        )
        self.rejected = Counter(
            "deft_rejected_uploads_total", "Gradient uploads rejected", ["reason"], registry=r
        )
        self.clamped_claims = Counter(
            "deft_clamped_claims_total",
            "Reported block costs far faster than the device's own history or its hardware "
            "class, scheduled as the evidence says",
            ["device"],
            registry=r,
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        return serve_metrics(self.registry, port, host, ROLE)

"""Prometheus metrics of the coordinator (names follow Prometheus conventions: base units in
the name, `_total` for counters). Each coordinator owns its registry, so several can run in one
process (tests) without clashing."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "deft_device_spectral_efficiency_bits_per_second_per_hertz",
            "Uplink spectral efficiency r_k = log2(1 + SNR_k)",
            ["device"],
            registry=r,
        )
        self.bytes = Counter("deft_bytes_total", "Payload bytes moved", ["direction"], registry=r)
        self.loss = Gauge("deft_training_loss", "Mean training loss reported by agents", registry=r)
        self.eval_metric = Gauge(
            "deft_eval_metric", "Evaluation metric on the dev split", ["metric"], registry=r
        )
        self.eval_loss = Gauge("deft_eval_loss", "Evaluation loss on the dev split", registry=r)
        self.solve = Gauge(
            "deft_scheduler_solve_seconds", "Scheduler's solve time this round", registry=r
        )
        self.scheduler_call = Gauge(
            "deft_scheduler_request_seconds", "Round trip of the Allocate RPC", registry=r
        )
        self.live_agents = Gauge("deft_live_agents", "Agents with a recent heartbeat", registry=r)
        self.rejected = Counter(
            "deft_rejected_uploads_total", "Gradient uploads rejected", ["reason"], registry=r
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose /metrics; returns the bound port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)

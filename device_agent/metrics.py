"""Prometheus metrics of a device agent (optional: `deft agent --metrics-port P`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from lola_deft.protos.metrics_endpoint import new_registry, serve_metrics

LAST_CONTACT = "deft_agent_last_contact_timestamp_seconds"

ROLE = "agent"  # named in the error when its /metrics port is taken


class AgentMetrics:
    def __init__(self, device_id: str) -> None:
        self.registry = new_registry()
        r, labels = self.registry, ["device"]
        self.device_id = device_id
        self.last_contact = Gauge(
            LAST_CONTACT,
            "Unix time of the last call the coordinator answered",
            labels,
            registry=r,
        )
        self.rounds = Counter(
            "deft_agent_rounds_total", "Rounds this agent trained a block in", labels, registry=r
        )
        self.block = Gauge(
            "deft_agent_block", "Block trained in the last round (0: none)", labels, registry=r
        )
        self.compute = Gauge(
            "deft_agent_compute_seconds",
            "Compute time of the last block gradient",
            labels,
            registry=r,
        )
        self.upload = Gauge(
            "deft_agent_upload_seconds", "Time of the last gradient upload", labels, registry=r
        )
        self.loss = Gauge(
            "deft_agent_training_loss", "Mean local training loss, last round", labels, registry=r
        )
        self.memory = Gauge(
            "deft_agent_available_memory_bytes", "Memory reported as available", labels, registry=r
        )
        self.efficiency = Gauge(
            "deft_agent_spectral_efficiency",
            "Reported uplink spectral efficiency r_k, in bit/s/Hz",
            labels,
            registry=r,
        )
        self.block_seconds = Gauge(
            "deft_agent_block_seconds_per_iteration",
            "Seconds per local iteration reported for each block (start-up profile corrected "
            "by measured rounds)",
            ["device", "block"],
            registry=r,
        )
        self.compute_factor = Gauge(
            "deft_agent_compute_factor",
            "Measured compute over the start-up profile, recent rounds' median (1: as profiled)",
            labels,
            registry=r,
        )
        self.block_memory = Gauge(
            "deft_agent_block_peak_memory_bytes",
            "Profiled peak memory per block",
            ["device", "block"],
            registry=r,
        )

        self.cache_hits = Counter(
            "deft_agent_cache_hits_total",
            "PAC+: samples whose backbone states came from the activation cache",
            labels,
            registry=r,
        )
        self.cache_misses = Counter(
            "deft_agent_cache_misses_total",
            "PAC+: samples that went through the backbone (first epoch, or no room cached)",
            labels,
            registry=r,
        )
        self.cache_bytes = Gauge(
            "deft_agent_cache_bytes",
            "PAC+: bytes of cached backbone states, in memory and on disk",
            ["device", "where"],
            registry=r,
        )
        self.cache_samples = Gauge(
            "deft_agent_cache_samples",
            "PAC+: samples whose states are cached, in memory and on disk",
            ["device", "where"],
            registry=r,
        )
        self.cache_fraction = Gauge(
            "deft_agent_cache_fraction",
            "PAC+: share of this device's samples whose states are cached (1: the backbone is "
            "no longer needed)",
            labels,
            registry=r,
        )

        # Exported from the start (as 0), so dashboards find them before a PAC+ run fills them.
        self.cache_hits.labels(device_id)
        self.cache_misses.labels(device_id)
        for where in ("memory", "disk"):
            self.cache_bytes.labels(device_id, where)
            self.cache_samples.labels(device_id, where)
        self.cache_fraction.labels(device_id)

    def contact(self) -> None:
        """The coordinator just answered: `deft health --agent` reads how long ago."""
        self.last_contact.labels(self.device_id).set_to_current_time()

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        return serve_metrics(self.registry, port, host, ROLE)

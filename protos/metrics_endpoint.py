"""The one way every role exposes Prometheus /metrics (roles share protos/, so it lives here)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)


def new_registry() -> CollectorRegistry:
    """A role's own registry (no module-level state shared between roles in one process, as in
    the tests), with the standard process_*, python_info and python_gc_* metrics every
    Prometheus user expects."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(registry: CollectorRegistry, port: int, host: str, role: str) -> int:
    """Serve `registry` on host:port; returns the bound port (0 picks a free one). A busy or
    foreign address is an OSError that names the role and the address, not a bare
    "[Errno 98]"."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise OSError(
            f"cannot serve the {role}'s metrics on {host}:{port} (--metrics-port): "
            f"{error.strerror or error}"
        ) from None
    return int(server.server_port)

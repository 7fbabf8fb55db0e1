"""The one way every role exposes Prometheus /metrics (roles share protos/, so it lives here)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(registry: CollectorRegistry, port: int, host: str) -> int:
    """Serve `registry` on host:port; returns the bound port (0 picks a free one). A busy or
    foreign address is an OSError that names it, not a bare "[Errno 98]"."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise OSError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from None
    return int(server.server_port)

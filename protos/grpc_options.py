"""gRPC settings every LoLa-DEFT process shares.

The 4 MiB default receive limit is too small for a scheduler request with thousands of devices
and for whole adapters, and users of other federated systems hit RESOURCE_EXHAUSTED on it, so
limits are explicit and large payloads (weights, gradients) travel as CHUNK_BYTES pieces.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

MEBIBYTE = 2**20
DEFAULT_MAX_MESSAGE_BYTES = 64 * MEBIBYTE
CHUNK_BYTES = 1 * MEBIBYTE
# The coordinator never needs more than a chunk and its framing in one message: anything larger
# is refused before it is read (RESOURCE_EXHAUSTED), whatever RPC it claims to be.
COORDINATOR_MAX_MESSAGE_BYTES = 4 * MEBIBYTE
SCHEDULER_SERVICE = "deft.v1.Scheduler"
COORDINATOR_SERVICE = "deft.v1.Coordinator"


def message_size_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[tuple[str, int]]:
    """Channel/server options that set both send and receive limits explicitly."""
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """A server's options: the size limits, and no SO_REUSEPORT. gRPC sets it by default on
    Linux, so a second server on a busy port would bind too and silently take half the calls;
    without it the second one fails to bind and says which port."""
    return [*message_size_options(max_message_bytes), ("grpc.so_reuseport", 0)]


def http_host(grpc_host: str) -> str:
    """Where a metrics endpoint listens: the host gRPC binds (so --host 127.0.0.1 exposes
    nothing else either); "all interfaces" becomes IPv4's 0.0.0.0, which works in containers
    without IPv6 too."""
    host = grpc_host.strip("[]")
    return "0.0.0.0" if host in ("", "::", "0.0.0.0") else host


def unreachable_reason(error: grpc.RpcError, timeout_s: float) -> str:
    """gRPC's connection failure in a few words ("Connection refused", "no answer within 10 s",
    the TLS handshake's complaint)."""
    import grpc  # here: the engine's layers import this module and must not load grpc

    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout_s:g} s"
    details = error.details() or "unavailable"
    last = re.split(r"last error: ", details)[-1]
    # "UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"
    return last.rsplit(": ", 1)[-1].strip()[:200] or details[:200]

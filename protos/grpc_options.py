"""gRPC settings every LoLa-DEFT process shares.

The 4 MiB default receive limit is too small for a scheduler request with thousands of devices
and for whole adapters, and users of other federated systems hit RESOURCE_EXHAUSTED on it, so
limits are explicit and large payloads (weights, gradients) travel as CHUNK_BYTES pieces.
"""

from __future__ import annotations

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

"""Errors the coordinator reports to its callers: one vocabulary, mapped to gRPC status codes
once, in `lola_deft.server.service.STATUS_OF`. Nothing below the wire layer imports grpc.

Every message is safe to send: anything a client sent appears only through `quote`, which
caps its length, so a hostile 10,000-character id cannot blow up a status trailer.
"""

from __future__ import annotations

from lola_deft.protos.quoting import quote

__all__ = [
    "AlreadyRegistered",
    "CoordinatorError",
    "DeadlinePassed",
    "Forbidden",
    "GradientRefused",
    "Incompatible",
    "InvalidRequest",
    "NonFiniteStep",
    "NotAssigned",
    "NotNow",
    "NotReady",
    "PipelineAborted",
    "TooLarge",
    "Unauthenticated",
    "UnknownSession",
    "quote",
]


class CoordinatorError(Exception):
    """Base class of every error the coordinator reports; nothing was changed."""


class InvalidRequest(CoordinatorError):
    """A malformed request; the message starts with the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class UnknownSession(CoordinatorError):
    """The session is not (or no longer) known: the agent must register again."""


class Incompatible(CoordinatorError):
    """The agent cannot take part as it is (another base model, for one)."""


class NotNow(CoordinatorError):
    """Well-formed, but not for the round that is running (wrong round, round closed)."""


class NotAssigned(CoordinatorError):
    """The device holds no block, or another block, in this round."""


class DeadlinePassed(CoordinatorError):
    """The round's upload deadline has passed."""


class NotReady(CoordinatorError):
    """Not yet: what was asked for is still on its way (a pipeline's states); ask again."""


class PipelineAborted(CoordinatorError):
    """A cache-filling pipeline stopped (a stage's device died, its deadline passed)."""


class TooLarge(CoordinatorError):
    """More than the coordinator accepts: a stream over what the block weighs, a full registry."""


class Unauthenticated(CoordinatorError):
    """The caller proved no identity where one is required (no device certificate)."""


class Forbidden(CoordinatorError):
    """The caller is known but may not do this: not enrolled, revoked, or another device's id."""


class AlreadyRegistered(CoordinatorError):
    """The device id is live under another registration that no identity ties to the caller."""


class GradientRefused(InvalidRequest):
    """An upload whose numbers may not touch the model: non-finite, too large, absurd loss."""


class NonFiniteStep(Exception):
    """An optimizer step left parameters non-finite; it was undone (not a caller's error)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        super().__init__(f"the step made {shown} non-finite")

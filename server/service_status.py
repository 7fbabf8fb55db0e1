"""The one mapping of the coordinator's errors to gRPC status codes, for every port it serves
(the gRPC service and the data port answer a refusal alike)."""

from __future__ import annotations

import re

import grpc

from lola_deft.server.errors import (
    AlreadyRegistered,
    CoordinatorError,
    DeadlinePassed,
    Forbidden,
    Incompatible,
    InvalidRequest,
    NotAssigned,
    NotNow,
    NotReady,
    PipelineAborted,
    TooLarge,
    Unauthenticated,
    UnknownSession,
)

STATUS_OF: dict[type[CoordinatorError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownSession: grpc.StatusCode.NOT_FOUND,  # agents register again on NOT_FOUND
    Incompatible: grpc.StatusCode.FAILED_PRECONDITION,
    NotNow: grpc.StatusCode.FAILED_PRECONDITION,
    NotAssigned: grpc.StatusCode.PERMISSION_DENIED,
    DeadlinePassed: grpc.StatusCode.DEADLINE_EXCEEDED,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    AlreadyRegistered: grpc.StatusCode.ALREADY_EXISTS,
    PipelineAborted: grpc.StatusCode.ABORTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,  # agents ask again after UNAVAILABLE
}


def status_of(error: CoordinatorError) -> grpc.StatusCode:
    """The status of an error's class, or of the nearest class above it in STATUS_OF."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    raise TypeError(f"no gRPC status for {type(error).__name__}")


def reason(error: CoordinatorError) -> str:
    """Metric label of a refusal: the error's class in snake case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()

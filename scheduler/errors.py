"""Errors the scheduler raises; each maps to one CLI exit status and one gRPC status code."""


class SchedulerError(Exception):
    """Base class of every error the scheduler reports to its callers."""


class InstanceError(SchedulerError, ValueError):
    """Malformed input. The message starts with the offending field so users can fix it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InfeasibleError(SchedulerError):
    """Well-formed input for which no allocation satisfies the constraints; says why."""

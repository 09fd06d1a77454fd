"""Typed errors that cross module boundaries. Each carries the sentence shown to the user.

A user-caused failure is not an exception: it is a FAIL SimulationResult.
"""

from __future__ import annotations


class SimjailError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(SimjailError):
    """The request itself is malformed (names the field). Never retried."""


class InfrastructureError(SimjailError):
    """The worker cannot do the job right now (store down, sandbox or renderer unusable).
    Retryable."""


class JobCancelled(Exception):
    """The job was cancelled by its caller (a Temporal cancellation, a worker shutdown). Its
    children are dead and its directory is gone when this is raised. Never a FAIL, never
    retried by simjail itself: the caller re-raises its own cancellation."""

"""The two ways a job goes wrong, each typed, each carrying the sentence shown to the user.

- A **failure** is the design's fault (or the verdict): `Failure` (kind + reason), raised as
  `Failed` wherever it is found and turned into a FAIL result in one place per side (the
  pipeline for the sandboxed path, `physics.judge` for the physics). Never retried.
- An **error** is not a FAIL: `InvalidRequest` (the request itself is malformed; never retried),
  `InfrastructureError` (the worker cannot do the job now; retryable), `JobCancelled`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from common.models.simulation import FailureKind
from worker.text import printable

MAX_REASON_CHARS = 2000
"""A reason is one sentence for a person; SimulationResult.reason has the same cap."""


@dataclass(frozen=True)
class Failure:
    """Why a run is a FAIL: the machine-readable kind and one human sentence."""

    kind: FailureKind
    reason: str


class Failed(Exception):
    """Raised with the Failure of the run; the caller's one mapping turns it into a FAIL."""

    def __init__(self, kind: FailureKind, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(kind, reason)

    @property
    def kind(self) -> FailureKind:
        return self.failure.kind

    @property
    def reason(self) -> str:
        return self.failure.reason


class SimjailError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(SimjailError):
    """The request itself is malformed (names the field). Never retried."""

    @classmethod
    def from_validation(cls, e: ValidationError) -> InvalidRequest:
        """`invalid request: <field>: <what is wrong>; …` for pydantic's errors. Field names
        come from the request (an unknown field is named as sent), so they are escaped; the
        message is capped, and never quotes the offending value."""
        lines = []
        for err in e.errors()[:MAX_VALIDATION_ERRORS]:
            loc = ".".join(printable(str(x))[:80] for x in err["loc"]) or "request"
            lines.append(f"{loc}: {err['msg']}")
        if e.error_count() > MAX_VALIDATION_ERRORS:
            lines.append(f"and {e.error_count() - MAX_VALIDATION_ERRORS} more")
        return cls(("invalid request: " + "; ".join(lines))[:MAX_REASON_CHARS])


MAX_VALIDATION_ERRORS = 10


class InfrastructureError(SimjailError):
    """The worker cannot do the job right now (store down, sandbox or renderer unusable).
    Retryable. `cause` names what failed, for the metrics: `store`, `sandbox`, `render`,
    `server` (the Temporal server) or `worker` (anything else of the worker's own)."""

    cause: str = "worker"

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.cause = cause


class JobCancelled(Exception):
    """The job was cancelled by its caller (a Temporal cancellation, a worker shutdown). Its
    children are dead and its directory is gone when this is raised. Never a FAIL, never
    retried by simjail itself: the caller re-raises its own cancellation."""

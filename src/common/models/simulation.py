"""The public contract of simjail: what a controller sends and what it gets back.

Every model here is frozen, forbids unknown fields and rejects NaN/inf, so a malformed request fails
at the boundary with pydantic's message naming the bad field. All lengths are millimetres
(build123d's unit); the physics runs in metres internally. See DESIGN.md §3 and the README.
"""

from __future__ import annotations

import base64
import math
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

# --- Caps (worker policy). Requests may ask for less, never for more. ---------------------------

MAX_CODE_BYTES = 256 * 1024
"""Largest inline build123d source; agent code is text, this is generous."""
MAX_STEP_BYTES = 1024 * 1024
"""Largest inline STEP payload; Temporal payloads are capped at 2 MB, larger files go by `uri`."""
MAX_URI_CHARS = 2048
MAX_DURATION_S = 60.0
"""Longest simulated time a job may ask for."""
MAX_JITTER_RUNS = 16
MAX_ZONES = 64
MAX_CONTROLS = 64
MAX_WIDTH, MAX_HEIGHT = 1920, 1080
MAX_FPS = 60


class StrictModel(BaseModel):
    """Base of every contract model: immutable, no unknown fields, finite numbers only."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        str_strip_whitespace=False,
    )


Vec3 = Annotated[tuple[float, float, float], Field(description="x, y, z in millimetres")]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class FailureKind(StrEnum):
    """Machine-readable reason of a FAIL. `None` in a result means SUCCESS."""

    # Caused by the submitted code or the sandbox's limits.
    SYNTAX_ERROR = "SYNTAX_ERROR"
    USER_CODE_ERROR = "USER_CODE_ERROR"
    NO_GEOMETRY = "NO_GEOMETRY"
    INVALID_GEOMETRY = "INVALID_GEOMETRY"
    GEOMETRY_LIMIT = "GEOMETRY_LIMIT"
    TIMEOUT = "TIMEOUT"
    CPU_LIMIT = "CPU_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    SANDBOX_VIOLATION = "SANDBOX_VIOLATION"
    CRASHED = "CRASHED"
    PROTOCOL_VIOLATION = "PROTOCOL_VIOLATION"
    NO_RESULT = "NO_RESULT"
    # Verdicts of the physics.
    GOAL_NOT_REACHED = "GOAL_NOT_REACHED"
    FORBID_ZONE_HIT = "FORBID_ZONE_HIT"
    OUT_OF_BOUNDS = "OUT_OF_BOUNDS"
    BUILD_ZONE_VIOLATION = "BUILD_ZONE_VIOLATION"
    PHYSICS_INSTABILITY = "PHYSICS_INSTABILITY"
    MOTOR_OVERLOAD = "MOTOR_OVERLOAD"
    INITIAL_PENETRATION = "INITIAL_PENETRATION"


# --- Sources ----------------------------------------------------------------------------------


class CadSource(StrictModel):
    """Exactly one of `code`, `step` or `uri`."""

    code: str | None = Field(
        default=None,
        description="build123d Python source defining build() (or a module-level `result`).",
    )
    step: bytes | None = Field(default=None, description="A STEP file's bytes (base64 in JSON).")
    uri: str | None = Field(
        default=None,
        max_length=MAX_URI_CHARS,
        description="file:// or s3:// URL of a .py or .step object in the artifact store.",
    )

    @field_validator("code")
    @classmethod
    def _code_size(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            size = len(v.encode("utf-8"))
        except UnicodeEncodeError as e:  # lone surrogates: not UTF-8, and not serialisable
            raise ValueError(f"source code is not valid UTF-8 text: {e.reason}") from None
        if size > MAX_CODE_BYTES:
            raise ValueError(f"source code is larger than {MAX_CODE_BYTES} bytes")
        return v

    @field_validator("step", mode="before")
    @classmethod
    def _step_decode(cls, v: Any) -> Any:
        # JSON carries bytes as base64 text; Python callers may pass raw bytes.
        if isinstance(v, str):
            try:
                return base64.b64decode(v, validate=True)
            except ValueError as e:
                raise ValueError("step must be base64-encoded bytes") from e
        return v

    @field_serializer("step", when_used="json")
    def _step_encode(self, v: bytes | None) -> str | None:
        # The inverse of _step_decode: standard base64 (pydantic's own would be UTF-8 text,
        # which fails on binary STEP data and turns ASCII STEP text into different bytes).
        return None if v is None else base64.b64encode(v).decode("ascii")

    @field_validator("step")
    @classmethod
    def _step_size(cls, v: bytes | None) -> bytes | None:
        if v is not None and len(v) > MAX_STEP_BYTES:
            raise ValueError(
                f"inline STEP data is larger than {MAX_STEP_BYTES} bytes; upload it and use `uri`"
            )
        return v

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError("uri must start with file:// or s3://")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("code", "step", "uri") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of code, step, uri must be set (got {', '.join(given) or 'none'})"
            )
        return self


# --- Objectives -------------------------------------------------------------------------------


class Box(StrictModel):
    """Axis-aligned box in millimetres."""

    min: Vec3
    max: Vec3

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        for axis, lo, hi in zip("xyz", self.min, self.max, strict=True):
            if not lo < hi:
                raise ValueError(f"min.{axis} ({lo}) must be smaller than max.{axis} ({hi})")
        return self

    def contains(self, p: tuple[float, float, float] | list[float]) -> bool:
        return all(lo <= c <= hi for lo, c, hi in zip(self.min, p, self.max, strict=True))


class Zone(Box):
    """A named box: `goal` (the target must settle here), `forbid` (no part may touch it) or
    `build` (design parts must lie inside a build zone at t=0)."""

    name: Name
    kind: Literal["goal", "forbid", "build"]


class Objectives(StrictModel):
    target: Name | None = Field(
        default=None, description="Label of the part whose centre of mass must reach a goal zone."
    )
    zones: list[Zone] = Field(default_factory=list, max_length=MAX_ZONES)
    goal_hold_s: float = Field(default=1.0, ge=0.0, le=MAX_DURATION_S)
    bounds: Box | None = Field(
        default=None, description="A movable part whose centre of mass leaves this box fails."
    )
    floor: bool = Field(default=True, description="A ground plane at z = 0.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [z.name for z in self.zones]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"zones: duplicate zone names {dup}")
        has_goal = any(z.kind == "goal" for z in self.zones)
        if has_goal and self.target is None:
            raise ValueError("target: a goal zone needs a target part label")
        if self.target is not None and not has_goal:
            raise ValueError("zones: a target needs at least one goal zone")
        return self


# --- Options ----------------------------------------------------------------------------------


class Jitter(StrictModel):
    """Extra perturbed runs: each free design part is shifted by up to `position_mm` along each
    axis and turned by up to `rotation_deg` about a random axis. The nominal run and every
    perturbed run must pass."""

    runs: int = Field(default=0, ge=0, le=MAX_JITTER_RUNS)
    position_mm: float = Field(default=0.0, ge=0.0, le=100.0)
    rotation_deg: float = Field(default=0.0, ge=0.0, le=180.0)


class Control(StrictModel):
    """Input of one actuator over time. The actuator is named after the part whose joint it
    drives. constant: `value`; sine: `offset + amplitude·sin(2π·frequency_hz·t + phase_rad)`;
    step: `value` before `at_s`, `after` from then on."""

    actuator: Name
    kind: Literal["constant", "sine", "step"]
    value: float = 0.0
    amplitude: float = 0.0
    frequency_hz: float = Field(default=0.0, ge=0.0, le=1000.0)
    phase_rad: float = 0.0
    offset: float = 0.0
    at_s: float = Field(default=0.0, ge=0.0)
    after: float = 0.0


class Limits(StrictModel):
    """Per-job limits. Each may only tighten the worker's policy; a larger value is refused."""

    wall_s: float | None = Field(default=None, gt=0)
    build_wall_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    max_triangles: int | None = Field(default=None, gt=0)
    max_parts: int | None = Field(default=None, gt=0)


Tessellation = Literal["coarse", "normal", "fine"] | Annotated[float, Field(ge=0.001, le=10.0)]
"""How finely solids are meshed: a preset, whose deflection follows each solid's size (bounded),
or a fixed chord deflection in millimetres. README "Tessellation"."""


class SimOptions(StrictModel):
    duration_s: float = Field(default=10.0, gt=0.0, le=MAX_DURATION_S)
    timestep_s: float = Field(default=0.002, ge=1e-4, le=0.01)
    render: bool = True
    width: int = Field(default=640, ge=64, le=MAX_WIDTH, multiple_of=2)
    height: int = Field(default=480, ge=64, le=MAX_HEIGHT, multiple_of=2)
    fps: int = Field(default=30, ge=1, le=MAX_FPS)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    jitter: Jitter = Field(default_factory=Jitter)
    controls: list[Control] = Field(default_factory=list, max_length=MAX_CONTROLS)
    stop_on_decision: bool = False
    tessellation: Tessellation = Field(
        default="normal",
        description="`coarse`, `normal` or `fine` (a deflection relative to each solid's size) "
        "or a chord deflection in mm (0.001–10).",
    )
    full_video: bool = Field(
        default=False,
        description="Record the video for the whole run. By default the video (and so the "
        "render time) ends 1 s of simulated time after the decision (worker.simulation.loop."
        "VIDEO_TAIL_S); the simulation, the verdict and the metrics are the same either way.",
    )
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _unique_controls(self) -> Self:
        names = [c.actuator for c in self.controls]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"controls: more than one control for actuator {dup}")
        return self


class SimulationRequest(StrictModel):
    request_id: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    ]
    design: CadSource
    environment: CadSource | None = None
    objectives: Objectives = Field(default_factory=Objectives)
    options: SimOptions = Field(default_factory=SimOptions)


# --- Result -----------------------------------------------------------------------------------


class SimulationResult(StrictModel):
    """The verdict and where its artifacts are. Every number in it is finite, so its JSON is
    plain JSON for any language (the pydantic data converter would write a NaN as a bare
    `NaN`, which most JSON parsers refuse)."""

    outcome: Literal["SUCCESS", "FAIL"]
    reason: str = Field(max_length=2000)
    failure: FailureKind | None = None
    video_url: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifact_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Artifact name (video, poster, mjcf, geometry, logs, report, result) → the "
        "URL to open it with: a file:// URL, or for S3 a presigned URL that expires.",
    )
    artifact_uris: dict[str, str] = Field(
        default_factory=dict,
        description="The same names → a lasting reference that never expires: "
        "`s3://bucket/prefix/key` for S3 (readable with the store's credentials, and usable as a "
        "CadSource.uri), the file:// URL for a local store.",
    )
    policy_digest: str = ""
    versions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _failure_iff_fail(self) -> Self:
        if (self.outcome == "SUCCESS") != (self.failure is None):
            raise ValueError("failure must be None exactly when outcome is SUCCESS")
        return self

    @field_validator("metrics")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = _non_finite(v, "metrics")
        if bad:
            raise ValueError(f"{bad} is not a finite number")
        return v


def _non_finite(v: Any, path: str) -> str | None:
    """The path of the first NaN or infinity in a JSON-like value, or None."""
    if isinstance(v, float) and not math.isfinite(v):
        return path
    if isinstance(v, dict):
        items: Any = v.items()
    elif isinstance(v, list | tuple):
        items = enumerate(v)
    else:
        return None
    for k, x in items:
        found = _non_finite(x, f"{path}.{k}")
        if found:
            return found
    return None

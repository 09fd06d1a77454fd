"""Frames between a child (jail) and the supervisor: the only code that parses child output.

Wire format: a 4-byte big-endian length, then that many bytes of UTF-8 JSON object. Never pickle.
The reader is incremental (feed it whatever `read` returned), caps every frame and the total, and
turns anything malformed into a ProtocolError; it never trusts a length it has not bounded.

Frame types (the `type` key):
- child → supervisor: `progress` (phase, sim_time_s, fraction), `result` (payload per jail),
  `error` (kind, message: user-code errors the build child observed).

Result payloads are validated here too (`build_result`, `physics_result`), so no other module
interprets what a child sent. The other direction, what the supervisor hands a child, is here too:
`BuildJob` and `PhysicsJob`, written to the job's read-only `job.json` by the supervisor and read
back by the child with the same models.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.models.simulation import FailureKind, Objectives, SimOptions
from worker.errors import Failure
from worker.simulation.geometry import Geometry

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64


class ProtocolError(ValueError):
    """The child broke the frame protocol (maps to PROTOCOL_VIOLATION)."""


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProgressFrame(_Frame):
    type: Literal["progress"]
    phase: str = Field(max_length=64)
    sim_time_s: float = 0.0
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)


BUILD_ERROR_KINDS = (
    "SYNTAX_ERROR",
    "USER_CODE_ERROR",
    "NO_GEOMETRY",
    "INVALID_GEOMETRY",
    "GEOMETRY_LIMIT",
)
"""The only failures a build child may report itself: mistakes of the code it ran."""


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    kind: Literal[
        "SYNTAX_ERROR", "USER_CODE_ERROR", "NO_GEOMETRY", "INVALID_GEOMETRY", "GEOMETRY_LIMIT"
    ]
    message: str = Field(max_length=4000)

    @classmethod
    def of(cls, failure: Failure) -> ErrorFrame:
        """The frame a build child sends for `failure`. A kind a build may not report (raised
        by code the design planted in our path) is reported as the design's own error."""
        kind = failure.kind.value if failure.kind.value in BUILD_ERROR_KINDS else "USER_CODE_ERROR"
        return cls.model_validate({"kind": kind, "message": failure.reason[:3900]})


class ResultFrame(_Frame):
    type: Literal["result"] = "result"
    payload: dict[str, Any]


Frame = ProgressFrame | ErrorFrame | ResultFrame


def encode(frame: Frame | Mapping[str, Any]) -> bytes:
    """One frame on the wire. Children pass models; tests may pass raw mappings."""
    obj = frame.model_dump(mode="json") if isinstance(frame, BaseModel) else dict(frame)
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body)) + body


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: no backtracking
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


def _depth_ok(raw: bytes) -> bool:
    """Reject nesting deeper than MAX_DEPTH before json.loads can recurse on it.

    Strings are cut out first (brackets inside them do not nest), then the running bracket
    count is taken with numpy: both steps run in C, so a 64 MiB frame costs milliseconds."""
    skeleton = _JSON_STRING.sub(b"", raw)
    if not skeleton:
        return True
    steps = _DEPTH_STEP[np.frombuffer(skeleton, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max()) <= MAX_DEPTH


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf
        raise ValueError(f"{text[:40]} is not a finite number")
    return v


def parse(body: bytes) -> Frame:
    if not _depth_ok(body):
        raise ProtocolError(f"frame nests deeper than {MAX_DEPTH} levels")
    try:
        # Strict JSON, as encode() writes it: NaN/Infinity (and overflowing numbers) are refused
        # everywhere, not only in typed fields, since untyped payloads flow into results.
        obj = json.loads(
            body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"frame is not UTF-8 JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    kind = obj.get("type")
    model: type[_Frame]
    if kind == "progress":
        model = ProgressFrame
    elif kind == "error":
        model = ErrorFrame
    elif kind == "result":
        model = ResultFrame
    else:
        raise ProtocolError(f"unknown frame type {str(kind)[:40]!r}")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise ProtocolError(f"malformed {kind} frame: {e.errors()[0]['msg']}") from None


class FrameReader:
    """Incremental, bounded frame decoder."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, max_total: int = 4 * MAX_FRAME_BYTES):
        self.max_frame = max_frame
        self.max_total = max_total
        self.total = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self.total += len(data)
        if self.total > self.max_total:
            raise ProtocolError(f"more than {self.max_total} bytes of frames")
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            if n > self.max_frame:
                raise ProtocolError(f"frame of {n} bytes exceeds the cap of {self.max_frame}")
            if len(self._buf) < HEADER.size + n:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + n])
            del self._buf[: HEADER.size + n]
            frames.append(parse(body))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame left at EOF (a truncated frame)."""
        return len(self._buf)


# --- Jobs: supervisor → child (job.json) -------------------------------------------------------


class _Job(_Frame):
    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json())

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.model_validate_json(path.read_bytes())


class BuildJob(_Job):
    """One source for a build child: inline code, or a STEP file next to job.json."""

    source_kind: Literal["design", "environment"]
    filename: str = Field(max_length=64)
    """What the source is called in the user's messages (design.py, environment.step)."""
    code: str | None = None
    step_file: str | None = Field(default=None, max_length=64)
    max_parts: int
    """The child stops extracting once a cap is exceeded (the supervisor checks the merged
    geometry again): thousands of parts are GEOMETRY_LIMIT, not a CPU limit."""
    max_triangles: int


class PhysicsJob(_Job):
    geometry: Geometry
    objectives: Objectives
    options: SimOptions
    wall_s: float
    """The child stops itself this long after it starts, a little before the supervisor would
    kill it, so a slow run still reports what it measured."""


class ProbeJob(_Job):
    render: bool


# --- Result payloads --------------------------------------------------------------------------


class PhysicsPayload(_Frame):
    """What the physics child reports. `status` "infra" marks a fault of the worker (e.g. no
    rendering), not of the design; then only `message` is meaningful."""

    status: Literal["ok", "infra"]
    failure: FailureKind | None = None
    reason: str = Field(default="", max_length=4000)
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: dict[Literal["video", "poster", "last_frame", "contact_sheet", "plots", "mjcf"], str] = (
        Field(default_factory=dict)
    )
    message: str = Field(default="", max_length=4000)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "payload"
    return f"{loc}: {err['msg']}"


def build_failure(frame: ErrorFrame, kind: str) -> Failure:
    """The failure a build child reported. Which source failed is the supervisor's knowledge
    (`kind`), never the frame's."""
    where = "" if kind == "design" else "Environment: "
    return Failure(FailureKind(frame.kind), where + frame.message)


def build_result(frame: ResultFrame, kind: str) -> Geometry:
    """The geometry a build child returned; ProtocolError if it is not valid Geometry or claims
    parts of the other source."""
    try:
        geom = Geometry.model_validate(frame.payload)
    except ValidationError as e:
        raise ProtocolError(f"the {kind} geometry is malformed at {_first_error(e)}") from None
    if any(p.source != kind for p in geom.parts):
        raise ProtocolError(f"the {kind} build mislabelled the source of its parts")
    return geom


def physics_result(frame: ResultFrame) -> PhysicsPayload:
    try:
        return PhysicsPayload.model_validate(frame.payload)
    except ValidationError as e:
        raise ProtocolError(f"the physics result is malformed at {_first_error(e)}") from None

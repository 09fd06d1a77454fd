"""Frames between a child (jail) and the supervisor: the only code that parses child output.

Wire format: a 4-byte big-endian length, then that many bytes of UTF-8 JSON object. Never pickle.
The reader is incremental (feed it whatever `read` returned), caps every frame and the total, and
turns anything malformed into a ProtocolError; it never trusts a length it has not bounded.

Frame types (the `type` key):
- child → supervisor: `progress` (phase, sim_time_s, fraction), `result` (payload per jail),
  `error` (kind, message: user-code errors the build child observed).

Result payloads are validated here too (`build_result`, `physics_result`), so no other module
interprets what a child sent.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.models.simulation import FailureKind
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


class ErrorFrame(_Frame):
    type: Literal["error"]
    kind: Literal[
        "SYNTAX_ERROR", "USER_CODE_ERROR", "NO_GEOMETRY", "INVALID_GEOMETRY", "GEOMETRY_LIMIT"
    ]
    message: str = Field(max_length=4000)


class ResultFrame(_Frame):
    type: Literal["result"]
    payload: dict[str, Any]


Frame = ProgressFrame | ErrorFrame | ResultFrame


def encode(frame: dict[str, Any]) -> bytes:
    body = json.dumps(frame, separators=(",", ":"), allow_nan=False).encode("utf-8")
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


# --- Result payloads --------------------------------------------------------------------------


class PhysicsPayload(_Frame):
    """What the physics child reports. `status` "infra" marks a fault of the worker (e.g. no
    rendering), not of the design; then only `message` is meaningful."""

    status: Literal["ok", "infra"]
    failure: FailureKind | None = None
    reason: str = Field(default="", max_length=4000)
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: dict[Literal["video", "poster", "mjcf"], str] = Field(default_factory=dict)
    message: str = Field(default="", max_length=4000)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "payload"
    return f"{loc}: {err['msg']}"


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

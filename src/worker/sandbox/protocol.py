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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.models.simulation import FailureKind, Objectives, SimOptions, Tessellation
from worker.errors import Failure
from worker.simulation.geometry import ConvexPieces, Geometry
from worker.text import quoted

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
"""No frame is ever larger (encode refuses to write one); every reader has a tighter cap."""
MAX_DEPTH = 64


@dataclass(frozen=True)
class FrameCaps:
    """What one reader accepts: bytes per frame, bytes in all, and JSON values per frame.

    The value cap is what bounds the worker's memory: json.loads turns each value into a Python
    object of 30–100 bytes, so a frame of tiny values ("[0,0,0,…]") costs ~25× its size once
    parsed. Values are counted in the frame's skeleton (strings cut out) before it is parsed."""

    frame_bytes: int
    total_bytes: int
    values: int


MESH_BYTES_PER_TRIANGLE = 16
"""Three int32 indices, base64: 12 bytes → 16 characters."""
MESH_BYTES_PER_VERTEX = 16
"""Three float32 coordinates, base64: 12 bytes → 16 characters."""
PART_OVERHEAD_BYTES = 8 * 1024
"""Label, colour, material, mass properties, PARTS metadata and per-solid JSON of one part."""
PART_VALUES = 200
"""JSON values of one part apart from its meshes (metadata, joint, actuator, 64 solids)."""


def geometry_caps(max_parts: int, max_triangles: int, max_vertices: int) -> FrameCaps:
    """The caps of a build child's frames: the largest geometry the job's caps allow, and no
    more (11.3 MB at the default caps of 200 parts, 200 000 triangles, 400 000 vertices)."""
    frame = (
        MESH_BYTES_PER_TRIANGLE * max_triangles
        + MESH_BYTES_PER_VERTEX * max_vertices
        + PART_OVERHEAD_BYTES * max_parts
        + 64 * 1024
    )
    return FrameCaps(
        frame_bytes=frame, total_bytes=2 * frame, values=PART_VALUES * max_parts + 1000
    )


PHYSICS_CAPS = FrameCaps(frame_bytes=16 * 1024 * 1024, total_bytes=64 * 1024 * 1024, values=500_000)
"""The physics child's frames: progress, and one result with the metrics (small; it processed
untrusted data, so it is bounded all the same)."""


class ProtocolError(ValueError):
    """The child broke the frame protocol (maps to PROTOCOL_VIOLATION)."""


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProgressFrame(_Frame):
    type: Literal["progress"]
    phase: str = Field(max_length=32, pattern=r"^[a-z0-9][a-z0-9 /._-]*$")
    """Reaches terminals and heartbeats: plain words only (a forged frame once painted a fake
    green SUCCESS line on the operator's terminal)."""
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
_STRUCTURE = np.zeros(256, dtype=bool)
_STRUCTURE[[ord(","), ord("["), ord("{")]] = True


SHAPE_CHUNK = 1 << 20
"""Bytes of skeleton looked at per step: bounds the scan's own memory to ~10 MB."""


def _shape_problem(raw: bytes | bytearray, max_values: int) -> str | None:
    """Why the frame must not reach json.loads, or None: nesting deeper than MAX_DEPTH (it
    would recurse), or more than `max_values` values (each becomes a Python object).

    Strings are cut out first (brackets and commas inside them do not count), then brackets
    and commas are counted with numpy, a chunk at a time: both steps run in C, so a 64 MiB frame
    costs milliseconds. A JSON text has at most (commas + opening brackets + 1) values."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    depth, values = 0, 1
    for start in range(0, len(skeleton), SHAPE_CHUNK):
        chars = skeleton[start : start + SHAPE_CHUNK]
        running = np.cumsum(_DEPTH_STEP[chars], dtype=np.int64)
        if depth + int(running.max()) > MAX_DEPTH:
            return f"frame nests deeper than {MAX_DEPTH} levels"
        depth += int(running[-1])
        values += int(np.count_nonzero(_STRUCTURE[chars]))
        if values > max_values:
            return f"frame holds more than {max_values} JSON values"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf
        raise ValueError(f"{text[:40]} is not a finite number")
    return v


def parse(body: bytes | bytearray, max_values: int = PHYSICS_CAPS.values) -> Frame:
    problem = _shape_problem(body, max_values)
    if problem is not None:
        raise ProtocolError(problem)
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
    """Incremental, bounded frame decoder: at most `caps.frame_bytes` per frame (a length
    above it is refused before the frame arrives), `caps.total_bytes` in all, and
    `caps.values` JSON values per frame (counted before parsing)."""

    def __init__(self, caps: FrameCaps = PHYSICS_CAPS):
        self.caps = caps
        self.max_frame = caps.frame_bytes
        self.max_total = caps.total_bytes
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
            body = self._buf[HEADER.size : HEADER.size + n]
            del self._buf[: HEADER.size + n]
            frames.append(parse(body, self.caps.values))
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
    tessellation: Tessellation = "normal"
    """How finely to mesh (the request's SimOptions.tessellation)."""


class PhysicsJob(_Job):
    geometry: Geometry
    objectives: Objectives
    options: SimOptions
    wall_s: float
    """The child stops itself this long after it starts, a little before the supervisor would
    kill it, so a slow run still reports what it measured."""
    decompositions: dict[str, ConvexPieces] = Field(default_factory=dict)
    """Cached convex decompositions of this geometry's solids (key → pieces), from earlier
    jobs; the child checks them again before use."""


class ProbeJob(_Job):
    render: bool


class ProbeReport(_Frame):
    """What the probe child saw inside its jail (`simjail policy check` compares it with what
    the policy files promise)."""

    uid: int
    gid: int
    pid: int
    hostname: str
    env_keys: list[str]
    out_writable: bool
    limits: dict[str, tuple[int | None, int | None]]
    """Row of /proc/self/limits → (soft, hard); None is unlimited."""
    uid_map: str
    gid_map: str
    status: dict[str, str]
    """Cap*, NoNewPrivs and Seccomp lines of /proc/self/status."""
    interfaces: list[str]
    """The network interfaces that are up."""
    mounts: list[tuple[str, bool]]
    """Every mount point and whether it is read-only."""
    tmpfs_bytes: dict[str, int]
    x32_errno: int | None
    """errno of a call through the x32 ABI (None: the call went through)."""
    denied: dict[str, int]
    """Forbidden calls tried in forked children → how each child ended (-31: SIGSYS)."""
    clone3_errno: int | None = None
    """errno of clone3 (None: the call went through)."""
    fds: list[int] = Field(default_factory=list)
    """The file descriptors the jailed program started with."""
    frame_fd: int = -1
    """Which of them is the frame pipe."""
    rendered_mean: float | None = None


def probe_report(frame: ResultFrame) -> ProbeReport:
    try:
        return ProbeReport.model_validate(frame.payload)
    except ValidationError as e:
        raise ProtocolError(f"the probe report is malformed at {_first_error(e)}") from None


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
    decompositions: dict[str, ConvexPieces] = Field(default_factory=dict, max_length=2000)
    """Decompositions the child computed, for the supervisor's cache (which checks them)."""


def _first_error(e: ValidationError) -> str:
    """Where the first error is and what it is. The location may name a key the child chose:
    anything but a plain identifier is quoted."""
    err = e.errors()[0]
    parts = [
        str(x) if isinstance(x, int) or re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", str(x))
        else quoted(str(x), 60)
        for x in err["loc"]
    ]  # fmt: skip
    return f"{'.'.join(parts) or 'payload'}: {err['msg']}"


def build_failure(frame: ErrorFrame, kind: str) -> Failure:
    """The failure a build child reported. Its message is the design's process's (the code it
    ran may have written the frame itself): quoted and marked as such. Which source failed is
    the supervisor's knowledge (`kind`), never the frame's."""
    return Failure(FailureKind(frame.kind), f"The {kind}'s build failed: {quoted(frame.message)}")


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


# --- The zygote: supervisor ↔ zygote, and each warm job's control socket -------------------------

CONTROL_BYTES = 4096
"""No message on a zygote socket is larger (the receiver refuses a truncated one)."""
ZYGOTE_JOB_BYTES = 64 * 1024
"""The job request (its BPF program is the bulk: ~1 KiB)."""
ZYGOTE_FDS = ("stdout", "stderr", "frames", "log", "control")
"""The descriptors that travel with a `job` request, in this order, then one per job file."""
ZYGOTE_MODULES = ("worker.sandbox.build_child", "worker.sandbox.probe_child")
"""What a warm job may run: the build child, and the probe of `simjail policy check`."""


class JobMount(_Frame):
    """A fresh tmpfs of the job: where, and nsjail's options string for it (size, inodes)."""

    dst: Literal["/tmp", "/dev/shm"]
    options: str = Field(max_length=200, pattern=r"^[a-z_]+=[0-9]+(,[a-z_]+=[0-9]+)*$")


class ZygoteJob(_Frame):
    """One warm job, sent by the supervisor on the job's control socket to the zygote's child
    that runs it (its descriptors, ZYGOTE_FDS then one per file, went to the zygote with a `job`
    message). Everything in it comes from the policy files and the job's limits; the zygote
    itself never holds it (every job gets a copy of the zygote's memory)."""

    module: Literal["worker.sandbox.build_child", "worker.sandbox.probe_child"]
    args: list[str] = Field(max_length=16)
    """The child's command line after the module (`--job /job/job.json --frame-fd 3 ...`)."""
    files: list[str] = Field(max_length=4)
    """Names in the job's read-only /job of the file descriptors after ZYGOTE_FDS."""
    job_bytes: int = Field(gt=0)
    """Size of the job's /job tmpfs (the files fit)."""
    job_source: str = Field(max_length=512, pattern=r"^/[^\s,]*$")
    """The host directory the files come from, as the /job tmpfs's source name: what a cold
    jail's bind of it shows in mountinfo, and how the worker finds a job's processes."""
    time_limit_s: int = Field(gt=0)
    """nsjail's time_limit, enforced by the job's reaper: it kills the job then."""
    rlimits: dict[str, int | None]
    """resource name (`RLIMIT_CPU`) → soft and hard limit (None: unlimited), from build.cfg."""
    mounts: list[JobMount]
    """The job's own tmpfs mounts (build.cfg's)."""
    seccomp: str = Field(max_length=32 * 1024)
    """base64 of the BPF program compiled from seccomp/jail.kafel."""
    cwd: str = Field(max_length=64)


class ControlMessage(_Frame):
    """`job`: the supervisor's request to the zygote (the job's descriptors travel with it, the
    ZygoteJob itself on the job's control socket, to the zygote's child). On a warm job's
    control socket, from the job before any design code runs: `ready`
    (the supervisor learns its pid from the credentials the kernel attaches), `running` (the
    jail is complete: the design's code starts now), `failed` (setting it up went wrong: no
    design code ran). From the supervisor: `go`, `stop`. From the job's reaper, which no
    design code can reach, once the job is gone: `status`."""

    type: Literal["job", "ready", "go", "stop", "running", "failed", "status"]
    reason: str = Field(default="", max_length=2000)
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    cpu_s: float = Field(default=0.0, ge=0)


def control_message(data: bytes) -> ControlMessage:
    """Parse one message of a zygote socket; ProtocolError if it is not one."""
    if len(data) > CONTROL_BYTES:
        raise ProtocolError("zygote control message too large")
    try:
        return ControlMessage.model_validate_json(data)
    except ValidationError as e:
        raise ProtocolError(f"malformed zygote control message: {_first_error(e)}") from None


def zygote_job(data: bytes) -> ZygoteJob:
    if len(data) > ZYGOTE_JOB_BYTES:
        raise ProtocolError("zygote job request too large")
    try:
        return ZygoteJob.model_validate_json(data)
    except ValidationError as e:
        raise ProtocolError(f"malformed zygote job request: {_first_error(e)}") from None

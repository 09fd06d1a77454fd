"""Geometry as data: what a build child sends back, and the per-part metadata convention.

This module never imports build123d: it is the data boundary between the process that ran the
agent's code and everything trusted. `validate_geometry` is the supervisor's check before the
physics sees any of it. Lengths are millimetres; densities kg/m³.
"""

from __future__ import annotations

import base64
import math
from typing import Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from common.models.simulation import FailureKind, Name, StrictModel, Vec3
from worker.errors import Failed

DEFAULT_DENSITY = 1000.0
"""kg/m³ when neither the part's metadata nor its build123d `material` gives one (water, ~PLA)."""

MAX_PARTS = 200
MAX_TRIANGLES = 200_000
"""Whole-scene triangle cap: MuJoCo hulls every solid, and a big mesh mostly costs render time."""
MAX_VERTICES = 400_000
"""Whole-scene vertex cap. MuJoCo's hull of a solid costs time in its vertex count, whatever
its triangles: 4 triangles over millions of vertices burned a whole physics time limit."""
MAX_SOLIDS_PER_PART = 64
MAX_COORD_MM = 1e6
"""1 km: anything further out is a mistake or an attempt to break the solver."""


# --- Per-part metadata (the `PARTS` dict of a design module) --------------------------------


class Actuator(StrictModel):
    """Drives the part's joint. `motor`: the control is the force (N) or torque (N·m) itself;
    `position`: servo to the control (rad or mm) with stiffness `kp` (N·m/rad or N/mm);
    `velocity`: servo to the control (rad/s or mm/s) with gain `kv` (N·m per rad/s or N per
    mm/s). A position servo has no damping of its own: give its joint `damping`.
    `force_limit` (N or N·m) clamps the output; being clamped for longer than `overload_s` in a
    row is MOTOR_OVERLOAD."""

    kind: Literal["motor", "position", "velocity"] = "motor"
    kp: float = Field(default=10.0, gt=0)
    kv: float = Field(default=1.0, gt=0)
    ctrl_range: tuple[float, float] | None = None
    force_limit: float = Field(default=10.0, gt=0)
    overload_s: float = Field(default=0.5, gt=0)


class Joint(StrictModel):
    """Connects the part to `parent` ("world" or another part's label). `anchor` is a point in
    world millimetres at t=0 (default: the part's centre of mass); `axis` a direction in world
    coordinates. `range` is in degrees (hinge) or millimetres (slide); `damping` in N·m per
    rad/s (hinge) or N per mm/s (slide), like every other unit of the contract."""

    type: Literal["hinge", "slide", "weld"]
    parent: Name = "world"
    axis: Vec3 = (0.0, 0.0, 1.0)
    anchor: Vec3 | None = None
    range: tuple[float, float] | None = None
    damping: float = Field(default=0.0, ge=0)
    actuator: Actuator | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if math.hypot(*self.axis) < 1e-9:
            raise ValueError("axis must not be zero")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError("range must be (low, high) with low < high")
        if self.type == "weld" and self.actuator is not None:
            raise ValueError("a weld joint cannot have an actuator")
        return self


class PartMeta(StrictModel):
    """Simulation metadata of one part, keyed by label in the design's `PARTS` dict."""

    fixed: bool = False
    density: float | None = Field(default=None, gt=0, le=30000)
    friction: float | None = Field(default=None, ge=0, le=10)
    joint: Joint | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.fixed and self.joint is not None:
            raise ValueError("a part is either fixed or jointed, not both")
        return self


# --- Meshes and parts -------------------------------------------------------------------------


def encode_array(a: NDArray[np.generic], dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


class Mesh(StrictModel):
    """One solid's triangulation in world millimetres: base64 of little-endian float32 xyz
    triples and int32 index triples."""

    vertices: str
    triangles: str

    @classmethod
    def from_arrays(cls, vertices: NDArray[np.floating], triangles: NDArray[np.integer]) -> Mesh:
        return cls(vertices=encode_array(vertices, "<f4"), triangles=encode_array(triangles, "<i4"))

    def arrays(self) -> tuple[NDArray[np.float64], NDArray[np.int32]]:
        """Decoded (n,3) vertices and (m,3) triangles; raises ValueError on malformed data."""
        vb = base64.b64decode(self.vertices, validate=True)
        tb = base64.b64decode(self.triangles, validate=True)
        if len(vb) % 12 or len(tb) % 12:
            raise ValueError("mesh buffers are not whole xyz / index triples")
        v = np.frombuffer(vb, dtype="<f4").reshape(-1, 3).astype(np.float64)
        t = np.frombuffer(tb, dtype="<i4").reshape(-1, 3)
        return v, t

    @property
    def triangle_count(self) -> int:
        # base64 length → byte length without decoding; 12 bytes per triangle.
        return (len(self.triangles) * 3 // 4) // 12

    @property
    def vertex_count(self) -> int:
        return (len(self.vertices) * 3 // 4) // 12


class Part(StrictModel):
    label: Name
    source: Literal["design", "environment"]
    color: tuple[float, float, float, float] | None = None
    material: str | None = Field(default=None, max_length=64)
    """Name of the build123d material (bd_materials), for the report."""
    material_density: float | None = Field(default=None, gt=0, le=30000)
    """kg/m³ from the build123d material, when one is set."""
    volume_mm3: float = Field(gt=0)
    com_mm: Vec3
    inertia_mm5: tuple[float, float, float, float, float, float] = Field(
        description="Volume moment of inertia about the centre of mass (ixx iyy izz ixy ixz iyz), "
        "mm⁵; multiply by density for mass-weighted inertia."
    )
    solids: list[Mesh] = Field(min_length=1, max_length=MAX_SOLIDS_PER_PART)
    meta: PartMeta = Field(default_factory=PartMeta)

    @property
    def density(self) -> float:
        """PARTS metadata `density`, else the build123d material's, else DEFAULT_DENSITY."""
        if self.meta.density is not None:
            return self.meta.density
        if self.material_density is not None:
            return self.material_density
        return DEFAULT_DENSITY

    @property
    def mass_kg(self) -> float:
        return self.density * self.volume_mm3 * 1e-9


class Geometry(StrictModel):
    parts: list[Part] = Field(max_length=10 * MAX_PARTS)


def _rejected(kind: FailureKind, what: str) -> Failed:
    """Geometry that must not reach the physics (INVALID_GEOMETRY or GEOMETRY_LIMIT)."""
    return Failed(kind, f"The geometry was rejected: {what}.")


def _invalid(what: str) -> Failed:
    return _rejected(FailureKind.INVALID_GEOMETRY, what)


def merge(design: Geometry, environment: Geometry | None) -> Geometry:
    parts = list(design.parts) + (list(environment.parts) if environment else [])
    return Geometry(parts=parts)


def validate_geometry(
    geom: Geometry,
    *,
    max_parts: int = MAX_PARTS,
    max_triangles: int = MAX_TRIANGLES,
    max_vertices: int = MAX_VERTICES,
) -> None:
    """Raise Failed (INVALID_GEOMETRY or GEOMETRY_LIMIT) unless every part is finite, bounded,
    non-degenerate and uniquely labelled, joints name existing parents without cycles, and the
    caps hold."""
    if len(geom.parts) > max_parts:
        raise _rejected(
            FailureKind.GEOMETRY_LIMIT, f"{len(geom.parts)} parts exceed the cap of {max_parts}"
        )
    # Counted from the encoded lengths, before anything is decoded.
    total = sum(m.triangle_count for p in geom.parts for m in p.solids)
    if total > max_triangles:
        raise _rejected(
            FailureKind.GEOMETRY_LIMIT, f"{total} triangles exceed the cap of {max_triangles}"
        )
    vertices = sum(m.vertex_count for p in geom.parts for m in p.solids)
    if vertices > max_vertices:
        raise _rejected(
            FailureKind.GEOMETRY_LIMIT, f"{vertices} vertices exceed the cap of {max_vertices}"
        )
    for p in geom.parts:
        for m in p.solids:
            # Every vertex of a mesh belongs to a triangle, so there are at most three per
            # triangle; more is padding meant to cost time, refused before it is decoded.
            if m.vertex_count > 3 * m.triangle_count:
                raise _invalid(
                    f"part {p.label!r} has a solid of {m.vertex_count} vertices for "
                    f"{m.triangle_count} triangles"
                )
    labels = [p.label for p in geom.parts]
    dup = sorted({n for n in labels if labels.count(n) > 1})
    if dup:
        raise _invalid(f"duplicate part labels {dup}")
    by_label = {p.label: p for p in geom.parts}
    for p in geom.parts:
        if not all(abs(c) < MAX_COORD_MM for c in p.com_mm):
            raise _invalid(f"part {p.label!r} lies further than 1 km out")
        if p.volume_mm3 < 1e-3:
            raise _invalid(f"part {p.label!r} has no volume")
        ixx, iyy, izz = p.inertia_mm5[:3]
        if (
            min(ixx, iyy, izz) <= 0
            or ixx + iyy < izz * (1 - 1e-6)
            or ixx + izz < iyy * (1 - 1e-6)
            or iyy + izz < ixx * (1 - 1e-6)
        ):
            raise _invalid(f"part {p.label!r} has an impossible inertia")
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        mesh_volume, mesh_moment = 0.0, np.zeros(3)
        for m in p.solids:
            try:
                v, t = m.arrays()
            except ValueError as e:
                raise _invalid(f"part {p.label!r}: {e}") from None
            if len(v) < 4 or len(t) < 4:
                raise _invalid(f"part {p.label!r} has a degenerate solid")
            if not np.isfinite(v).all() or np.abs(v).max() >= MAX_COORD_MM:
                raise _invalid(f"part {p.label!r} has non-finite or enormous coordinates")
            if t.min() < 0 or t.max() >= len(v):
                raise _invalid(f"part {p.label!r} has bad triangle indices")
            unused = len(v) - int(np.count_nonzero(np.bincount(t.ravel(), minlength=len(v))))
            if unused:
                raise _invalid(f"part {p.label!r} has {unused} vertices that no triangle uses")
            extent = v.max(axis=0) - v.min(axis=0)
            if np.sort(extent)[0] < 1e-3:
                raise _invalid(f"part {p.label!r} has a flat solid")
            lo, hi = np.minimum(lo, v.min(axis=0)), np.maximum(hi, v.max(axis=0))
            vol, moment = _enclosed(v, t)
            mesh_volume += vol
            mesh_moment += moment
        _check_mass_properties(p, lo, hi)
        _check_against_mesh(p, mesh_volume, mesh_moment, float(np.linalg.norm(hi - lo)))
        j = p.meta.joint
        if j is not None and j.parent != "world":
            if j.parent not in by_label:
                raise _invalid(f"part {p.label!r} is jointed to unknown part {j.parent!r}")
            if j.parent == p.label:
                raise _invalid(f"part {p.label!r} is jointed to itself")
            parent = by_label[j.parent]
            # The design may mount itself on the task's fixed fixtures, but never grab a movable
            # environment part (the target, say) at t=0; the environment never joints to design.
            if p.source != parent.source and (p.source == "environment" or not parent.meta.fixed):
                raise _invalid(
                    f"{p.source} part {p.label!r} may not be jointed to {parent.source} part "
                    f"{j.parent!r}" + ("" if p.source == "environment" else " (it is not fixed)"),
                )
    # Joint parents must form a forest (no cycles).
    for p in geom.parts:
        seen = {p.label}
        cur = p
        while cur.meta.joint is not None and cur.meta.joint.parent != "world":
            cur = by_label[cur.meta.joint.parent]
            if cur.label in seen:
                raise _invalid(f"joints form a cycle through {sorted(seen)}")
            seen.add(cur.label)


def _enclosed(v: NDArray[np.float64], t: NDArray[np.int32]) -> tuple[float, NDArray[np.float64]]:
    """Volume a closed triangle mesh encloses, and its first moment (volume × centroid), by
    the divergence theorem over tetrahedra from the origin. Orientation-independent."""
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    six_v = np.einsum("ij,ij->i", a, np.cross(b, c))
    sign = 1.0 if six_v.sum() >= 0 else -1.0
    vol = sign * six_v.sum() / 6.0
    moment = sign * ((a + b + c) * six_v[:, None]).sum(axis=0) / 24.0
    return float(vol), moment


VOLUME_TOLERANCE = 0.05
"""Claimed CAD volume vs the volume its tessellation encloses (curved faces are cut short)."""
COM_TOLERANCE = 0.02
"""Claimed centre of mass vs the tessellation's, as a fraction of the part's diagonal."""


def _check_against_mesh(p: Part, volume: float, moment: NDArray[np.float64], diag: float) -> None:
    """The claimed volume and centre of mass must be those of the meshes (to tessellation
    accuracy): they are what the verdict follows, and the process that computed them ran the
    agent's code."""
    if volume <= 0 or abs(p.volume_mm3 - volume) > VOLUME_TOLERANCE * volume + 1.0:
        raise _invalid(
            f"part {p.label!r} claims a volume of {p.volume_mm3:.6g} mm³ but its solids enclose "
            f"{volume:.6g} mm³",
        )
    centroid = moment / volume
    if float(np.linalg.norm(np.array(p.com_mm) - centroid)) > COM_TOLERANCE * diag + 0.1:
        raise _invalid(
            f"part {p.label!r} claims a centre of mass away from the centre of its solids",
        )


def _check_mass_properties(p: Part, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> None:
    """Volume, centre of mass and inertia come from the process that ran the agent's code, apart
    from the meshes: they must at least be possible for a body inside the box the meshes span
    (grown by a tessellation margin). A centre of mass claimed a metre away from its mesh put a
    part "in the goal" that never left its start."""
    margin = 0.01 * float(np.linalg.norm(hi - lo)) + 0.1
    lo, hi = lo - margin, hi + margin
    if not all(lo[i] <= p.com_mm[i] <= hi[i] for i in range(3)):
        raise _invalid(f"part {p.label!r} claims a centre of mass outside its solids")
    extent = hi - lo
    if p.volume_mm3 > float(np.prod(extent)):
        raise _invalid(f"part {p.label!r} claims more volume than its solids can hold")
    # About the centre of mass, every point of the body is within the box's diagonal.
    if max(p.inertia_mm5[:3]) > p.volume_mm3 * float(extent @ extent):
        raise _invalid(f"part {p.label!r} claims an inertia its solids cannot have")

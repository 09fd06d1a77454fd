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

from common.models.simulation import FailureKind, Name, StrictModel, Tessellation, Vec3
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


# --- Tessellation -----------------------------------------------------------------------------

PRESETS: dict[str, tuple[float, float, float, float]] = {
    # name: (deflection / solid's bounding-box diagonal, lower and upper bound in mm, angle rad)
    "coarse": (1e-2, 0.1, 5.0, 0.6),
    "normal": (2e-3, 0.02, 1.0, 0.3),
    "fine": (5e-4, 0.005, 0.5, 0.15),
}
"""Tessellation presets (README "Tessellation"): the chord deflection follows the solid's size
within bounds, so a 10 mm pin and a 2 m frame are both meshed to what their size needs."""


def deflection(setting: Tessellation, diagonal_mm: float) -> tuple[float, float]:
    """Linear (mm) and angular (rad) deflection for a solid whose bounding box has this
    diagonal: the preset's fraction of it, bounded; or a fixed deflection in mm."""
    if isinstance(setting, str):
        rel, lo, hi, ang = PRESETS[setting]
        return float(min(max(diagonal_mm * rel, lo), hi)), ang
    return float(setting), 0.5


# --- Meshes and parts -------------------------------------------------------------------------


class Primitive(StrictModel):
    """The build's claim that a solid is an analytic shape (build123d knows each face's
    geometry type), in world millimetres: `center`, `quat` (w, x, y, z: the shape's frame; a
    cylinder's and a capsule's axis is the frame's z) and `size` (sphere: radius; box: half
    sizes; cylinder: radius, half length; capsule: radius, half length of its straight part).
    Data from the design's own process: `check_primitive` holds it against the mesh before
    anything uses it."""

    kind: Literal["sphere", "box", "cylinder", "capsule"]
    center: Vec3
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    size: Vec3


def encode_array(a: NDArray[np.generic], dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


class Mesh(StrictModel):
    """One solid's triangulation in world millimetres: base64 of little-endian float32 xyz
    triples and int32 index triples."""

    vertices: str
    triangles: str
    primitive: Primitive | None = None
    """Set when the solid is a sphere, box, cylinder or capsule: it then collides as MuJoCo's
    primitive of that exact size (once checked against these triangles)."""

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


MAX_PIECES_PER_SOLID = 256


class ConvexPieces(StrictModel):
    """Convex pieces of one solid: each a cloud of world-mm vertices (base64 of little-endian
    float32 xyz triples) that collides as its hull. Made by CoACD in a separate process and
    kept in the supervisor's cache: untrusted until `collision.check_pieces` accepts them."""

    pieces: list[str] = Field(min_length=1, max_length=MAX_PIECES_PER_SOLID)

    @classmethod
    def from_arrays(cls, arrays: list[NDArray[np.floating]]) -> ConvexPieces:
        return cls(pieces=[encode_array(a, "<f4") for a in arrays])

    def arrays(self) -> list[NDArray[np.float64]]:
        out = []
        for p in self.pieces:
            b = base64.b64decode(p, validate=True)
            if len(b) % 12:
                raise ValueError("a piece is not whole xyz triples")
            out.append(np.frombuffer(b, dtype="<f4").reshape(-1, 3).astype(np.float64))
        return out


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


class Dropped(StrictModel):
    """A leaf of the built object with no solid (a face, a sketch, a wire): it has no mass and
    was left out. Reported in the result's `warnings`."""

    position: int = Field(ge=0)
    """The leaf's position in tree order."""
    label: Name | None = None
    shape: Literal[
        "Compound", "Part", "Sketch", "Curve", "Solid", "Shell", "Face", "Wire", "Edge",
        "Vertex", "other",
    ]  # fmt: skip


class Geometry(StrictModel):
    parts: list[Part] = Field(max_length=10 * MAX_PARTS)
    dropped: list[Dropped] = Field(default_factory=list, max_length=1000)
    tessellation: Tessellation = "normal"
    """The setting the meshes were made with (the request's; the supervisor checks it)."""


def warnings(geom: Geometry) -> list[str]:
    """The result's warnings about the geometry (trusted sentences from checked data)."""
    out = []
    for d in geom.dropped[:20]:
        name = f"{d.label!r}" if d.label else f"number {d.position}"
        out.append(f"Leaf {name} (a {d.shape}) has no solid and was left out.")
    if len(geom.dropped) > 20:
        out.append(f"{len(geom.dropped) - 20} more leaves without a solid were left out.")
    return out


def _rejected(kind: FailureKind, what: str) -> Failed:
    """Geometry that must not reach the physics (INVALID_GEOMETRY or GEOMETRY_LIMIT)."""
    return Failed(kind, f"The geometry was rejected: {what}.")


def _invalid(what: str) -> Failed:
    return _rejected(FailureKind.INVALID_GEOMETRY, what)


def merge(design: Geometry, environment: Geometry | None) -> Geometry:
    parts = list(design.parts) + (list(environment.parts) if environment else [])
    dropped = list(design.dropped) + (list(environment.dropped) if environment else [])
    return Geometry(parts=parts, dropped=dropped[:1000], tessellation=design.tessellation)


def validate_geometry(
    geom: Geometry,
    *,
    max_parts: int = MAX_PARTS,
    max_triangles: int = MAX_TRIANGLES,
    max_vertices: int = MAX_VERTICES,
    tessellation: Tessellation | None = None,
) -> None:
    """Raise Failed (INVALID_GEOMETRY or GEOMETRY_LIMIT) unless every part is finite, bounded,
    non-degenerate and uniquely labelled, its claimed volume and centre of mass are those of
    its meshes (to what the deflection explains), every primitive claim holds, joints name
    existing parents without cycles, and the caps hold. `tessellation` is the setting the
    request asked for (the geometry must have been meshed with it)."""
    if tessellation is not None and geom.tessellation != tessellation:
        raise _invalid(f"it was meshed with {geom.tessellation!r}, not {tessellation!r}")
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
        mesh_volume, mesh_moment, slack = 0.0, np.zeros(3), 0.0
        for si, m in enumerate(p.solids):
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
            # The volume a mesh may be off its CAD solid: each point of it lies within the
            # deflection of the surface, so at most area × deflection (with a safety factor:
            # the build measured its box on the exact solid, this one on the mesh).
            delta = allowed_deflection(geom.tessellation, float(np.linalg.norm(extent)))
            solid_slack = DEFLECTION_SAFETY * surface_area(v, t) * delta
            slack += solid_slack
            if m.primitive is not None:
                why = check_primitive(m.primitive, v, t, vol, delta, solid_slack)
                if why is not None:
                    raise _invalid(
                        f"part {p.label!r} solid {si} is claimed to be a {m.primitive.kind} "
                        f"but its mesh is not one ({why})"
                    )
        _check_mass_properties(p, lo, hi)
        _check_against_mesh(p, mesh_volume, mesh_moment, float(np.linalg.norm(hi - lo)), slack)
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


DEFLECTION_SAFETY = 1.5
"""Margin on the deflection a mesh may show: the build sized it from the exact solid's box,
these checks from the mesh's (OCCT's deflection is a target, and chords are cut short)."""
VOLUME_FLOOR_MM3 = 1.0
"""Absolute volume slack (float32 coordinates)."""


def allowed_deflection(setting: Tessellation, mesh_diagonal_mm: float) -> float:
    """The largest chord deflection the build may have used for a solid whose mesh spans this
    diagonal (the exact solid's box is a little larger than its mesh's; the rule grows with the
    diagonal, so the bound is taken at a generous diagonal)."""
    return deflection(setting, mesh_diagonal_mm * 1.25 + 1.0)[0]


def surface_area(v: NDArray[np.float64], t: NDArray[np.int32]) -> float:
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2)


def _check_against_mesh(
    p: Part, volume: float, moment: NDArray[np.float64], diag: float, slack: float
) -> None:
    """The claimed volume and centre of mass must be those of the meshes, to what the
    deflection explains (`slack`, mm³): they are what the verdict follows, and the process that
    computed them ran the agent's code. Thin walls meshed coarsely (a tea cup, a vase) are off
    by 10–15% and pass; a solid whose mesh disagrees beyond that is not closed or intersects
    itself."""
    allowed = slack + VOLUME_FLOOR_MM3
    if volume <= 0 or abs(p.volume_mm3 - volume) > allowed:
        raise _invalid(
            f"part {p.label!r}: its CAD solid has a volume of {p.volume_mm3:.6g} mm³ but its "
            f"mesh encloses {volume:.6g} mm³, more than the tessellation can explain "
            f"(±{allowed:.3g} mm³); the solid is probably not closed or intersects itself"
        )
    centroid = moment / volume
    off = float(np.linalg.norm(np.array(p.com_mm) - centroid))
    if off > (allowed / volume) * diag + 0.02 * diag + 0.1:
        raise _invalid(
            f"part {p.label!r}: the centre of mass of its CAD solid is {off:.3g} mm from that "
            "of its mesh, more than the tessellation can explain; the solid is probably not "
            "closed or intersects itself"
        )


def check_primitive(
    prim: Primitive,
    v: NDArray[np.float64],
    t: NDArray[np.int32],
    mesh_volume: float,
    delta: float,
    volume_slack: float,
) -> str | None:
    """Why the claim that the mesh (v, t) is `prim` is false, or None when it holds: every
    vertex must lie on the claimed surface (within `delta`, the deflection), and the mesh must
    cover it (its volume that of the shape, within `volume_slack`, and its extent the shape's)."""
    q = np.array(prim.quat, dtype=np.float64)
    if abs(float(np.linalg.norm(q)) - 1.0) > 1e-6:
        return "its orientation is not a unit quaternion"
    size = np.array(prim.size, dtype=np.float64)
    if prim.kind == "sphere":
        size[1:] = 0.0
    elif prim.kind in ("cylinder", "capsule"):
        size[2] = 0.0
    if (size[: {"sphere": 1, "box": 3}.get(prim.kind, 2)] <= 0).any():
        return "its size is not positive"
    local = (v - np.array(prim.center)) @ quat_matrix(q)  # rows: vertices in the shape's frame
    tol = delta + 1e-4 * float(np.abs(v).max()) + 1e-6  # + float32 rounding of coordinates
    r = size[0]
    if prim.kind == "sphere":
        off = np.abs(np.linalg.norm(local, axis=1) - r)
        volume = 4.0 / 3.0 * math.pi * r**3
        half = np.array([r, r, r])
    elif prim.kind == "box":
        inside = np.abs(local) - size
        off = np.maximum(inside.max(axis=1), 0.0) + np.maximum(-inside.max(axis=1), 0.0)
        volume = 8.0 * float(np.prod(size))
        half = size
    elif prim.kind == "cylinder":
        h = size[1]
        radial = np.linalg.norm(local[:, :2], axis=1) - r
        axial = np.abs(local[:, 2]) - h
        outside = np.maximum(np.maximum(radial, axial), 0.0)
        on_surface = np.minimum(np.abs(radial), np.abs(axial))
        off = np.where((radial <= tol) & (axial <= tol), on_surface, outside)
        volume = math.pi * r * r * 2 * h
        half = np.array([r, r, h])
    else:  # capsule: the points at distance r from the segment z ∈ [−h, h]
        h = size[1]
        z = np.clip(local[:, 2], -h, h)
        seg = local - np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=1)
        off = np.abs(np.linalg.norm(seg, axis=1) - r)
        volume = math.pi * r * r * 2 * h + 4.0 / 3.0 * math.pi * r**3
        half = np.array([r, r, h + r])
    worst = float(off.max())
    if worst > tol:
        return f"a vertex lies {worst:.3g} mm off its surface"
    if abs(mesh_volume - volume) > volume_slack + VOLUME_FLOOR_MM3:
        return f"it encloses {mesh_volume:.6g} mm³, the shape {volume:.6g} mm³"
    reach = 2 * delta + tol
    if (local.max(axis=0) < half - reach).any() or (local.min(axis=0) > -half + reach).any():
        return "it does not span the shape"
    return None


def quat_matrix(q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation matrix of a unit quaternion (w, x, y, z): its columns are the frame's axes."""
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
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

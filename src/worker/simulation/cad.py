"""build123d objects → Geometry. Runs where the CAD code ran (a build child), and in
`simulate_local` for an already-built Compound. Imports build123d lazily: it costs ~2 s.

Conventions (README "Writing a design"):
- Parts are the leaves of the returned object tree, placed at their global location; leaves
  without a solid are left out and listed (`Geometry.dropped`).
- Each solid is meshed with a deflection that follows its size (`geometry.deflection`, the
  request's `tessellation`); the triangle cap is checked before a mesh is copied out.
- A solid that is a sphere, box, cylinder or capsule is claimed as that primitive (checked
  against its mesh by trusted code before it is used).
- Mass and inertia come from the exact CAD solid, never from the mesh.
- Unlabelled parts are named `<prefix>_<n>` in tree order, which is stable for a given design.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from common.models.simulation import FailureKind, Tessellation
from worker.errors import Failed
from worker.simulation.geometry import (
    DEFLECTION_SAFETY,
    MAX_SOLIDS_PER_PART,
    Dropped,
    Geometry,
    Mesh,
    Part,
    PartMeta,
    Primitive,
    allowed_deflection,
    check_primitive,
    deflection,
    surface_area,
)

PALETTE = [
    (0.90, 0.45, 0.15, 1.0),
    (0.20, 0.50, 0.85, 1.0),
    (0.30, 0.70, 0.35, 1.0),
    (0.85, 0.75, 0.20, 1.0),
    (0.60, 0.35, 0.75, 1.0),
    (0.75, 0.25, 0.30, 1.0),
]


def _no_geometry(reason: str) -> Failed:
    return Failed(FailureKind.NO_GEOMETRY, reason)


def _over_cap(what: str) -> Failed:
    return Failed(FailureKind.GEOMETRY_LIMIT, f"The geometry was rejected: {what}.")


def _flatten(obj: Any) -> list[Any]:
    """Shape, Compound, Part, builder (BuildPart etc.) or (nested) list of them → shapes."""
    from build123d import Shape

    if obj is None:
        return []
    if isinstance(obj, (list, tuple)):
        return [s for item in obj for s in _flatten(item)]
    if isinstance(obj, Shape):
        return [obj]
    for attr in ("part", "sketch", "line"):  # build123d builders expose their result here
        inner = getattr(type(obj), attr, None)
        if inner is not None:
            return _flatten(getattr(obj, attr))
    raise _no_geometry(f"build() returned a {type(obj).__name__}, not a build123d shape")


def _material(shape: Any) -> tuple[str | None, float | None]:
    """Name and density (kg/m³) of a build123d material set with `shape.material = "steel"`."""
    m = getattr(shape, "material", None)
    if not m:
        return None, None
    name = str(getattr(m, "name", m))[:64]
    density = getattr(getattr(m, "material", None), "density", None)
    try:
        return name, float(density) if density else None
    except (TypeError, ValueError):
        return name, None


def _mesh(
    solid: Any, tol: float, ang: float, label: str, scene: int, part: int, cap: int
) -> tuple[Any, Any]:
    """Vertices (n, 3) and triangles (m, 3) of `solid` meshed afresh at this deflection (an
    absolute one: build123d's `tessellate` reuses any finer mesh on the shape and asks OCCT for
    a deflection relative to each edge's size). The triangles are counted before anything is
    copied out, so a part that takes the scene (`scene` triangles so far, `part` of them this
    part's) past the cap is refused in milliseconds."""
    from OCP.BRep import BRep_Tool
    from OCP.BRepMesh import BRepMesh_IncrementalMesh
    from OCP.BRepTools import BRepTools
    from OCP.TopAbs import TopAbs_Orientation
    from OCP.TopLoc import TopLoc_Location

    BRepTools.Clean_s(solid.wrapped)
    BRepMesh_IncrementalMesh(solid.wrapped, tol, False, ang, False)
    faces = []
    count = 0
    for f in solid.faces():
        loc = TopLoc_Location()
        poly = BRep_Tool.Triangulation_s(f.wrapped, loc)
        if poly is not None:
            faces.append((f, poly, loc))
            count += poly.NbTriangles()
    if scene + count > cap:
        raise _over_cap(
            f"part {label!r} takes the scene past the cap of {cap} triangles (the part has "
            f"{part + count} so far at this tessellation); choose a coarser `tessellation` in "
            "the options"
        )
    verts, tris, offset = [], [], 0
    for f, poly, loc in faces:
        n = poly.NbNodes()
        tr = loc.Transformation()
        pts = np.array([(q.X(), q.Y(), q.Z()) for q in (poly.Node(i) for i in range(1, n + 1))])
        m = np.array([[tr.Value(r, c) for c in range(1, 5)] for r in range(1, 4)])
        t = np.array([poly.Triangle(i).Get() for i in range(1, poly.NbTriangles() + 1)])
        t = t.reshape(-1, 3) - 1 + offset
        if f.wrapped.Orientation() == TopAbs_Orientation.TopAbs_REVERSED:
            t = t[:, [0, 2, 1]]
        verts.append(pts.reshape(-1, 3) @ m[:, :3].T + m[:, 3])
        tris.append(t)
        offset += n
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(tris)


def _quat_of(axes: Any) -> tuple[float, float, float, float]:
    """(w, x, y, z) of the rotation whose columns are `axes` (a right-handed orthonormal 3×3)."""
    m = np.asarray(axes, dtype=np.float64)
    w = math.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2
    y = math.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2
    z = math.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2
    x = math.copysign(x, m[2, 1] - m[1, 2])
    y = math.copysign(y, m[0, 2] - m[2, 0])
    z = math.copysign(z, m[1, 0] - m[0, 1])
    n = math.sqrt(w * w + x * x + y * y + z * z)
    return (w / n, x / n, y / n, z / n)


def _frame_with_z(axis: Any) -> Any:
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


def primitive_of(solid: Any, verts: Any) -> Primitive | None:
    """The analytic shape `solid` is, from its faces' geometry types (build123d's GeomType), or
    None. `verts` are its mesh vertices (for the extents). A claim only: the supervisor checks
    it against the mesh before the physics uses it."""
    from build123d import GeomType
    from OCP.BRepAdaptor import BRepAdaptor_Surface

    faces = solid.faces()
    kinds = [f.geom_type for f in faces]
    c = solid.center()
    center = np.array([c.X, c.Y, c.Z])

    def vec(d: Any) -> Any:
        return np.array([d.X(), d.Y(), d.Z()])

    spheres = [BRepAdaptor_Surface(f.wrapped).Sphere() for f, k in zip(faces, kinds, strict=True)
               if k == GeomType.SPHERE]  # fmt: skip
    if spheres and len(spheres) == len(faces):
        sc = vec(spheres[0].Location())
        return Primitive(
            kind="sphere", center=tuple(sc.tolist()), size=(spheres[0].Radius(), 0.0, 0.0)
        )
    if len(faces) == 6 and all(k == GeomType.PLANE for k in kinds):
        normals = [vec(BRepAdaptor_Surface(f.wrapped).Plane().Axis().Direction()) for f in faces]
        axes: list[Any] = []
        for n in normals:
            if all(abs(float(n @ a)) < 1e-9 for a in axes):
                axes.append(n)
            elif not any(abs(abs(float(n @ a)) - 1) < 1e-9 for a in axes):
                return None
        if len(axes) != 3:
            return None
        frame = np.column_stack([axes[0], axes[1], np.cross(axes[0], axes[1])])
        half = np.abs((verts - center) @ frame).max(axis=0)
        return Primitive(kind="box", center=tuple(center.tolist()),
                         quat=_quat_of(frame), size=tuple(half.tolist()))  # fmt: skip
    cylinders = [f for f, k in zip(faces, kinds, strict=True) if k == GeomType.CYLINDER]
    if len(cylinders) != 1:
        return None
    cyl = BRepAdaptor_Surface(cylinders[0].wrapped).Cylinder()
    frame = _frame_with_z(vec(cyl.Axis().Direction()))
    r = cyl.Radius()
    h = float(np.abs((verts - center) @ frame[:, 2]).max())
    planes = sum(k == GeomType.PLANE for k in kinds)
    if planes == 2 and len(faces) == 3:
        return Primitive(kind="cylinder", center=tuple(center.tolist()),
                         quat=_quat_of(frame), size=(r, h, 0.0))  # fmt: skip
    if len(spheres) >= 2 and len(spheres) + 1 == len(faces) and h > r:
        return Primitive(kind="capsule", center=tuple(center.tolist()),
                         quat=_quat_of(frame), size=(r, h - r, 0.0))  # fmt: skip
    return None


def _holds(claim: Primitive, v: Any, t: Any, tessellation: Tessellation) -> bool:
    """Whether the supervisor's check will accept the claim: a solid whose faces only look like
    a primitive (two sphere faces of different centres, a cylinder cut at a slant) is not
    claimed, so an honest design never fails that check."""
    t = np.asarray(t, dtype=np.int64)
    delta = allowed_deflection(tessellation, float(np.linalg.norm(v.max(0) - v.min(0))))
    volume = (
        abs(float(np.einsum("ij,ij->i", v[t[:, 0]], np.cross(v[t[:, 1]], v[t[:, 2]])).sum())) / 6
    )
    slack = DEFLECTION_SAFETY * surface_area(v, t) * delta
    return check_primitive(claim, v, t, volume, delta, slack) is None


def _shape_kind(leaf: Any) -> Any:
    name = type(leaf).__name__
    known = ("Compound", "Part", "Sketch", "Curve", "Solid", "Shell", "Face", "Wire", "Edge",
             "Vertex")  # fmt: skip
    return name if name in known else "other"


def extract_geometry(
    obj: Any,
    meta: Mapping[str, Any] | None = None,
    *,
    source: Literal["design", "environment"] = "design",
    max_parts: int | None = None,
    max_triangles: int | None = None,
    tessellation: Tessellation = "normal",
) -> Geometry:
    """Turn what build() returned into Geometry. `meta` is the design's `PARTS` dict
    (label → PartMeta fields); it is validated here, and names of parts that do not exist are
    an error, so a typo does not silently leave a part free. Raises Failed for what the
    design got wrong.

    `max_parts` and `max_triangles` are the worker's caps: GEOMETRY_LIMIT is raised as soon as
    one is exceeded, before the expensive work (tessellation, mass properties) on parts that
    would be refused anyway. Thousands of parts otherwise end as a CPU or time limit."""
    from build123d import CenterOf, Shape

    meta = dict(meta or {})
    leaves: list[Any] = []
    for shape in _flatten(obj):
        leaves.extend(shape.leaves)
    if max_parts is not None:
        n = 0
        for leaf in leaves:
            n += bool(leaf.solids())
            if n > max_parts:
                raise _over_cap(f"build() returned more than {max_parts} parts, the cap")
    triangles = 0
    cap = max_triangles if max_triangles is not None else 10**9
    parts: list[Part] = []
    dropped: list[Dropped] = []
    prefix = "part" if source == "design" else "env"
    for i, leaf in enumerate(leaves):
        # The leaf's solids at their global location. Shape.cast of the relocated OCCT shape,
        # not leaf.located(): that deep-copies the whole parent tree for every leaf (200 parts
        # took 17 s; this takes milliseconds).
        placed = Shape.cast(leaf.wrapped.Located(leaf.global_location.wrapped))
        solids = placed.solids()
        if not solids:  # faces, wires and sketches carry no mass; they are not parts
            if len(dropped) < 1000:
                label = leaf.label if isinstance(leaf.label, str) else ""
                ok = bool(re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", label))
                dropped.append(
                    Dropped(position=i, label=label if ok else None, shape=_shape_kind(leaf))
                )
            continue
        if len(solids) > MAX_SOLIDS_PER_PART:
            raise Failed(
                FailureKind.INVALID_GEOMETRY,
                f"a part has {len(solids)} solids (cap {MAX_SOLIDS_PER_PART})",
            )
        label = leaf.label or f"{prefix}_{i}"
        meshes = []
        in_part = 0
        for s in solids:
            tol, ang = deflection(tessellation, float(s.bounding_box().diagonal))
            v, t = _mesh(s, tol, ang, label, triangles, in_part, cap)
            in_part += len(t)
            mesh = Mesh.from_arrays(v, t)
            claim = primitive_of(s, v) if len(v) else None
            if claim is not None and _holds(claim, v, t, tessellation):
                mesh = mesh.model_copy(update={"primitive": claim})
            meshes.append(mesh)
            triangles += len(t)
        com = placed.center(CenterOf.MASS)
        moi = np.array(placed.matrix_of_inertia, dtype=np.float64)
        color = None
        if leaf.color is not None:
            color = tuple(float(c) for c in tuple(leaf.color))
        else:
            color = PALETTE[len(parts) % len(PALETTE)]
        material_name, material_density = _material(leaf)
        parts.append(
            Part(
                label=label,
                source=source,
                color=color,
                material=material_name,
                material_density=material_density,
                volume_mm3=float(placed.volume),
                com_mm=(float(com.X), float(com.Y), float(com.Z)),
                inertia_mm5=(
                    float(moi[0, 0]),
                    float(moi[1, 1]),
                    float(moi[2, 2]),
                    float(moi[0, 1]),
                    float(moi[0, 2]),
                    float(moi[1, 2]),
                ),
                solids=meshes,
                meta=PartMeta.model_validate(meta.pop(label, {})),
            )
        )
    if meta:
        raise Failed(
            FailureKind.INVALID_GEOMETRY,
            f"PARTS names parts that build() did not return: {sorted(meta)}",
        )
    if not parts:
        raise _no_geometry("build() returned no solid")
    return Geometry(parts=parts, dropped=dropped, tessellation=tessellation)

"""build123d objects → Geometry. Runs where the CAD code ran (a build child), and in
`simulate_local` for an already-built Compound. Imports build123d lazily: it costs ~2 s.

Conventions (README "Writing a design"):
- Parts are the leaves of the returned object tree, placed at their global location.
- Each solid of a part becomes one convex collision hull; split a concave part into convex
  solids (e.g. a cup into a base and walls) to get faithful contacts.
- Mass and inertia come from the exact CAD solid, never from the mesh.
- Unlabelled parts are named `<prefix>_<n>` in tree order, which is stable for a given design.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from common.models.simulation import FailureKind
from worker.errors import Failed
from worker.simulation.geometry import MAX_SOLIDS_PER_PART, Geometry, Mesh, Part, PartMeta

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


def _tolerance(bbox_diag: float) -> tuple[float, float]:
    """Linear (mm) and angular (rad) tessellation tolerance, relative to the part's size."""
    return float(min(max(bbox_diag * 2e-3, 0.02), 1.0)), 0.3


def extract_geometry(
    obj: Any,
    meta: Mapping[str, Any] | None = None,
    *,
    source: Literal["design", "environment"] = "design",
    max_parts: int | None = None,
    max_triangles: int | None = None,
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
    parts: list[Part] = []
    prefix = "part" if source == "design" else "env"
    for i, leaf in enumerate(leaves):
        # The leaf's solids at their global location. Shape.cast of the relocated OCCT shape,
        # not leaf.located(): that deep-copies the whole parent tree for every leaf (200 parts
        # took 17 s; this takes milliseconds).
        placed = Shape.cast(leaf.wrapped.Located(leaf.global_location.wrapped))
        solids = placed.solids()
        if not solids:
            continue  # faces, wires and sketches carry no mass; they are not parts
        if len(solids) > MAX_SOLIDS_PER_PART:
            raise Failed(
                FailureKind.INVALID_GEOMETRY,
                f"a part has {len(solids)} solids (cap {MAX_SOLIDS_PER_PART})",
            )
        label = leaf.label or f"{prefix}_{i}"
        meshes = []
        for s in solids:
            bb = s.bounding_box()
            tol, ang = _tolerance(float(bb.diagonal))
            verts, tris = s.tessellate(tol, ang)
            v = np.array([(p.X, p.Y, p.Z) for p in verts], dtype=np.float64).reshape(-1, 3)
            t = np.array(tris, dtype=np.int64).reshape(-1, 3)
            meshes.append(Mesh.from_arrays(v, t))
            triangles += len(t)
            if max_triangles is not None and triangles > max_triangles:
                raise _over_cap(f"build() returned more than {max_triangles} triangles, the cap")
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
    return Geometry(parts=parts)

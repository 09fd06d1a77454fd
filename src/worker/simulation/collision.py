"""What each solid collides as (trusted code on untrusted meshes; runs in the physics jail).

In this order (README "Collision shapes"):
1. a checked primitive claim (sphere, box, cylinder, capsule): MuJoCo's primitive, exact;
2. a convex mesh: itself (MuJoCo collides with a mesh's convex hull);
3. a prism (an extruded profile: gears, brackets, latches, plates with holes): its cap's
   triangulation merged into convex polygons (Hertel–Mehlhorn), each extruded: exact;
4. any other concave solid: CoACD's convex decomposition, from the cache the supervisor handed
   over, else computed in a separate process under a time budget and a piece cap;
5. when the budget runs out or CoACD fails: the hull, with a warning in the result.

Pieces are vertex clouds (MuJoCo takes their hulls). Pieces that crossed a process boundary
(CoACD's process, the cache) are checked by `check_pieces` before use.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.simulation.geometry import ConvexPieces, Mesh

CONCAVE_FRACTION = 0.01
"""A solid whose mesh fills less of its hull than 1 − this is concave."""
MAX_PRISM_PIECES = 1024
"""Exact prism pieces allowed per solid (a 30-tooth gear with root fillets needs ~360)."""
MAX_PIECES = 32
"""CoACD pieces per solid (its `max_convex_hull`)."""
MAX_PIECE_VERTICES = 1024
"""Vertices per CoACD piece (a tea cup's handle piece has ~330)."""
PIECES_VOLUME_SLACK = 0.3
"""CoACD pieces overlap and fill concavities up to its threshold: their hulls may hold 30%
more than the solid (a cup's 19 pieces hold 13% more)."""
DECOMPOSITION_BUDGET_S = 60.0
"""Wall-clock budget of CoACD for one job, all solids together."""
COACD_PARAMS: dict[str, float | int | str] = {
    "threshold": 0.04,
    "max_convex_hull": MAX_PIECES,
    "preprocess_mode": "off",
    "resolution": 500,
    "mcts_nodes": 10,
    "mcts_iterations": 30,
    "seed": 0,
}
"""CoACD's settings (its concavity threshold is relative to the solid's size)."""


def coacd_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("coacd")
    except metadata.PackageNotFoundError:
        return "none"


def decomposition_key(mesh: Mesh) -> str:
    """The cache key of a solid's decomposition: its mesh's content, CoACD's version and
    settings. A repeated part (the same mesh) costs nothing the second time."""
    h = hashlib.sha256()
    h.update(mesh.vertices.encode("ascii"))
    h.update(b"|")
    h.update(mesh.triangles.encode("ascii"))
    h.update(json.dumps([coacd_version(), COACD_PARAMS], sort_keys=True).encode())
    return h.hexdigest()


def hull_volume(points: NDArray[np.float64]) -> float:
    return hull_volume_centroid(points)[0]


def hull_volume_centroid(points: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
    """Volume and centroid of the convex hull of `points` (0 and their mean when flat)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):
        return 0.0, points.mean(axis=0)
    o = points[hull.vertices].mean(axis=0)
    a, b, c = (points[hull.simplices[:, k]] - o for k in range(3))
    vols = np.abs(np.einsum("ij,ij->i", a, np.cross(b, c))) / 6
    total = float(vols.sum())
    if total <= 0:
        return 0.0, o
    centroid = o + ((a + b + c) / 4 * vols[:, None]).sum(axis=0) / total
    return total, centroid


def enclosed_volume(v: NDArray[np.float64], t: NDArray[np.int32]) -> float:
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    return abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


def is_concave(v: NDArray[np.float64], t: NDArray[np.int32]) -> bool:
    hull = hull_volume(v)
    return hull > 0 and enclosed_volume(v, t) < (1 - CONCAVE_FRACTION) * hull


# --- prisms ------------------------------------------------------------------------------------


def prism_pieces(
    v: NDArray[np.float64], t: NDArray[np.int32], fill_mm: float = 0.0
) -> list[NDArray[np.float64]] | None:
    """The exact convex pieces of a prism (a profile extruded along one direction), or None
    when the solid is not one. A prism here: two planar caps at the two ends of an axis with
    equal areas, every other triangle within 6° of parallel to the axis, and a volume of cap
    area × height (to 0.1%)."""
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    cross = np.cross(b - a, c - a)
    area2 = np.linalg.norm(cross, axis=1)
    ok = area2 > 0
    n = np.zeros_like(cross)
    n[ok] = cross[ok] / area2[ok, None]
    volume = enclosed_volume(v, t)
    if volume <= 0:
        return None
    sign = 1.0 if np.einsum("ij,ij->i", a, cross).sum() >= 0 else -1.0  # outward normals
    n *= sign
    tried: list[NDArray[np.float64]] = []
    for i in np.argsort(-area2)[:64]:
        d = n[i]
        if not ok[i] or any(abs(float(d @ e)) > 1 - 1e-6 for e in tried):
            continue
        tried.append(d)
        pieces = _prism_along(v, t, n, area2 / 2, volume, d, fill_mm)
        if pieces is not None:
            return pieces
        if len(tried) >= 6:
            break
    return None


def _prism_along(
    v: NDArray[np.float64],
    t: NDArray[np.int32],
    n: NDArray[np.float64],
    area: NDArray[np.float64],
    volume: float,
    d: NDArray[np.float64],
    fill_mm: float,
) -> list[NDArray[np.float64]] | None:
    d = d / np.linalg.norm(d)
    h = v @ d
    h0, h1 = float(h.min()), float(h.max())
    height = h1 - h0
    if height <= 1e-6:
        return None
    eps = 1e-4 * max(height, 1.0)
    dots = n @ d
    th = h[t]
    top = (dots > 1 - 1e-6) & (np.abs(th - h1) < eps).all(axis=1)
    bottom = (dots < -1 + 1e-6) & (np.abs(th - h0) < eps).all(axis=1)
    side = ~(top | bottom)
    if (np.abs(dots[side]) > math.sin(math.radians(6))).any():
        return None
    a_top, a_bottom = float(area[top].sum()), float(area[bottom].sum())
    if a_top <= 0 or abs(a_top - a_bottom) > 1e-3 * a_top:
        return None
    if abs(a_top * height - volume) > 1e-3 * volume:
        return None
    e1 = np.cross(d, [1.0, 0, 0] if abs(d[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    tri = t[top]
    uv = np.stack([v @ e1, v @ e2], axis=1)
    polygons = _convex_polygons(uv, tri, fill_mm)
    if polygons is None or len(polygons) > MAX_PRISM_PIECES:
        return None
    out = []
    for poly in polygons:
        p2 = np.array(poly)
        base = p2[:, :1] * e1 + p2[:, 1:2] * e2
        out.append(np.concatenate([base + h0 * d, base + h1 * d]))
    return out


def _convex_polygons(
    uv: NDArray[np.float64], tri: NDArray[np.int32], fill: float = 0.0
) -> list[list[tuple[float, float]]] | None:
    """Hertel–Mehlhorn: merge a triangulated region into convex polygons by dropping every
    diagonal whose removal keeps both sides' union convex (at most 4× the fewest pieces), or
    within `fill` of its hull (a piece then collides as that hull: a tessellated arc is not cut
    into slivers, which thin pieces let through under impact)."""
    scale = float(np.abs(uv).max()) or 1.0
    keys: dict[tuple[int, int], int] = {}
    pts: list[tuple[float, float]] = []
    ids = np.zeros(tri.shape, dtype=np.int64)
    q = np.round(uv / (scale * 1e-7)).astype(np.int64)
    for r in range(tri.shape[0]):
        for k in range(3):
            vi = int(tri[r, k])
            key = (int(q[vi, 0]), int(q[vi, 1]))
            if key not in keys:
                keys[key] = len(pts)
                pts.append((float(uv[vi, 0]), float(uv[vi, 1])))
            ids[r, k] = keys[key]
    p = np.array(pts)

    def cross(o: int, a: int, b: int) -> float:
        return float(
            (p[a, 0] - p[o, 0]) * (p[b, 1] - p[o, 1]) - (p[a, 1] - p[o, 1]) * (p[b, 0] - p[o, 0])
        )

    polys: dict[int, list[int]] = {}
    for r in range(ids.shape[0]):
        a, b, c = (int(x) for x in ids[r])
        if len({a, b, c}) < 3 or abs(cross(a, b, c)) < 1e-12 * scale * scale:
            continue  # a sliver: its neighbours cover it
        polys[r] = [a, b, c] if cross(a, b, c) > 0 else [a, c, b]
    owner: dict[tuple[int, int], int] = {}
    for pid, loop in polys.items():
        for i in range(3):
            owner[(loop[i], loop[(i + 1) % 3])] = pid
    tol = 1e-9 * scale * scale

    def convex(loop: list[int]) -> bool:
        m = len(loop)
        if all(cross(loop[i - 1], loop[i], loop[(i + 1) % m]) >= -tol for i in range(m)):
            return True
        return fill > 0 and _hull_gap(p[loop]) <= fill

    edges = sorted(
        ((a, b) for (a, b) in owner if a < b and (b, a) in owner),
        key=lambda e: -math.dist(pts[e[0]], pts[e[1]]),
    )
    for a, b in edges:
        pa, pb = owner.get((a, b)), owner.get((b, a))
        if pa is None or pb is None or pa == pb:
            continue
        la, lb = polys[pa], polys[pb]
        ia, ib = la.index(b), lb.index(a)
        ra = la[ia:] + la[:ia]  # starts at b, ends at a
        rb = lb[ib:] + lb[:ib]  # starts at a, ends at b
        merged = ra + rb[1:-1]
        if not convex(merged):
            continue
        polys[pa] = merged
        del polys[pb]
        for i in range(len(merged)):
            owner[(merged[i], merged[(i + 1) % len(merged)])] = pa
        owner.pop((a, b), None)
        owner.pop((b, a), None)
    if not polys:
        return None
    return [[pts[i] for i in loop] for loop in polys.values()]


def _hull_gap(poly: NDArray[np.float64]) -> float:
    """How far the simple polygon `poly` (CCW) lies inside its convex hull at most: the largest
    distance of a vertex from the hull's boundary."""
    order = np.lexsort((poly[:, 1], poly[:, 0]))
    pts = poly[order]

    def half(seq: NDArray[np.float64]) -> list[NDArray[np.float64]]:
        out: list[NDArray[np.float64]] = []
        for q in seq:
            while (
                len(out) >= 2
                and (
                    (out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                    - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])
                )
                <= 0
            ):
                out.pop()
            out.append(q)
        return out

    hull = np.array(half(pts)[:-1] + half(pts[::-1])[:-1])
    a, b = hull, np.roll(hull, -1, axis=0)
    ab = b - a
    length = np.linalg.norm(ab, axis=1)
    length[length == 0] = 1.0
    # Distance of each vertex to each hull edge's line (inside: positive); its nearest edge.
    rel = poly[:, None, :] - a[None, :, :]
    dist = (ab[None, :, 0] * rel[:, :, 1] - ab[None, :, 1] * rel[:, :, 0]) / length[None, :]
    return float(dist.min(axis=1).max())


# --- CoACD, in a process of its own ------------------------------------------------------------


def check_pieces(
    pieces: ConvexPieces, v: NDArray[np.float64], t: NDArray[np.int32]
) -> list[NDArray[np.float64]] | None:
    """The pieces as arrays when they can be this solid's decomposition, else None. They came
    from CoACD's process or from the cache, both written where untrusted meshes were parsed,
    so one job could try to poison the next: within the caps, finite, inside the solid's box
    (grown by 1% of its diagonal), each piece's centre inside the solid (or outside by no more
    than CoACD's concavity threshold: a plugged hole), and together holding
    at most PIECES_VOLUME_SLACK more than it."""
    try:
        arrays = pieces.arrays()
    except ValueError:
        return None
    if not 1 <= len(arrays) <= MAX_PIECES:
        return None
    lo, hi = v.min(axis=0), v.max(axis=0)
    margin = 0.01 * float(np.linalg.norm(hi - lo)) + 0.01
    total = 0.0
    centres = []
    for a in arrays:
        if not 4 <= len(a) <= MAX_PIECE_VERTICES or not np.isfinite(a).all():
            return None
        if (a < lo - margin).any() or (a > hi + margin).any():
            return None
        vol, centre = hull_volume_centroid(a)
        if vol <= 0:
            return None
        total += vol
        centres.append(centre)
    if total > (1 + PIECES_VOLUME_SLACK) * enclosed_volume(v, t) + 1.0:
        return None
    c = np.array(centres)
    out = ~inside(c, v, t)
    if out.any():
        # CoACD may plug a small hole (within its concavity threshold): a piece's centre may lie
        # outside the solid by that much, never deep in a hollow (a lid over a cup).
        reach = float(COACD_PARAMS["threshold"]) * float(np.linalg.norm(hi - lo))
        nearest = np.min(np.linalg.norm(c[out][:, None, :] - v[None, ::1, :], axis=2), axis=1)
        if (nearest > reach).any():
            return None
    return arrays


def inside(points: NDArray[np.float64], v: NDArray[np.float64], t: NDArray[np.int32]) -> Any:
    """Which points lie inside the closed mesh (generalised winding number > 1/2)."""
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    out = np.zeros(len(points), dtype=bool)
    for i, p in enumerate(points):
        x, y, z = a - p, b - p, c - p
        lx, ly, lz = (np.linalg.norm(w, axis=1) for w in (x, y, z))
        num = np.einsum("ij,ij->i", x, np.cross(y, z))
        den = (
            lx * ly * lz
            + np.einsum("ij,ij->i", x, y) * lz
            + np.einsum("ij,ij->i", y, z) * lx
            + np.einsum("ij,ij->i", z, x) * ly
        )
        w = np.arctan2(num, den).sum() / (2 * math.pi)
        out[i] = abs(w) > 0.5
    return out


def weld(v: NDArray[np.float64], t: NDArray[np.int32]) -> tuple[Any, Any]:
    """Merge coincident vertices (OCCT meshes each face apart): CoACD wants a manifold."""
    scale = float(np.abs(v).max()) or 1.0
    q = np.round(v / (scale * 1e-7))
    _, first, inverse = np.unique(q, axis=0, return_index=True, return_inverse=True)
    return v[first], inverse.reshape(-1)[t]


def run_coacd(
    v: NDArray[np.float64], t: NDArray[np.int32], budget_s: float
) -> tuple[ConvexPieces | None, str]:
    """CoACD's pieces of one solid, computed in a child process (CoACD is C++ parsing a mesh
    the design shaped; it has no time limit of its own, so the child is killed at the budget).
    (None, why) when the budget runs out or CoACD fails."""
    out_of_time = "budget"
    if budget_s <= 0.5:
        return None, out_of_time
    wv, wt = weld(v, t)
    request = ConvexPieces.from_arrays([wv]).model_dump_json()
    tri = ConvexPieces.from_arrays([wt.astype(np.float64)]).model_dump_json()
    try:
        r = subprocess.run(
            [sys.executable, "-I", "-m", "worker.simulation.decompose"],
            input=(request + "\n" + tri + "\n").encode(),
            capture_output=True,
            timeout=budget_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, out_of_time
    failed = "CoACD failed on it"  # its own process exited badly or sent garbage
    if r.returncode != 0 or len(r.stdout) > 64 * 2**20:
        return None, failed
    try:
        return ConvexPieces.model_validate_json(r.stdout), ""
    except ValueError:
        return None, failed


# --- the plan of one scene ---------------------------------------------------------------------


@dataclass
class Decomposer:
    """Decides each solid's collision pieces for one scene, with the cache the supervisor
    handed over; collects what it computed (for the supervisor to cache) and its warnings."""

    cached: dict[str, ConvexPieces] = field(default_factory=dict)
    budget_s: float = DECOMPOSITION_BUDGET_S
    computed: dict[str, ConvexPieces] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("primitive", "convex", "prism", "coacd", "cached", "hull_fallback"), 0
        )
    )
    """How many solids collide as what (the result's `metrics.collision`)."""
    _deadline: float | None = None
    _failed: set[str] = field(default_factory=set)
    """Solids (by key) CoACD could not do in this job: a repeated one is not tried again. Never
    kept across jobs: "cannot be decomposed" is a claim no check could verify."""

    def pieces(
        self,
        label: str,
        index: int,
        mesh: Mesh,
        v: NDArray[np.float64],
        t: NDArray[np.int32],
        deflection_mm: float = 0.0,
    ) -> list[NDArray[np.float64]] | None:
        """The convex pieces the solid collides as, or None: it collides as its own hull
        (convex, or the fallback)."""
        if not is_concave(v, t):
            self.stats["convex"] += 1
            return None
        exact = prism_pieces(v, t, deflection_mm)
        if exact is not None:
            self.stats["prism"] += 1
            return exact
        key = decomposition_key(mesh)
        for source in (self.cached, self.computed):
            if key in source:
                arrays = check_pieces(source[key], v, t)
                if arrays is not None:
                    self.stats["cached"] += 1
                    return arrays
        if self._deadline is None:
            self._deadline = time.monotonic() + self.budget_s
        if key in self._failed:
            got, why = None, "as for the same solid before"
        else:
            got, why = run_coacd(v, t, self._deadline - time.monotonic())
        arrays = check_pieces(got, v, t) if got is not None else None
        if got is None or arrays is None:
            if why == "budget":
                why = f"the job's {self.budget_s:g} s decomposition budget ran out"
            why = why or f"CoACD's pieces do not fit it within the cap of {MAX_PIECES} pieces"
            self.warnings.append(
                f"Part {label!r} solid {index} is concave but was not decomposed ({why}); it "
                "collides as its convex hull."
            )
            self.stats["hull_fallback"] += 1
            self._failed.add(key)
            return None
        self.computed[key] = got
        self.stats["coacd"] += 1
        return arrays

"""Geometry → MuJoCo model (MjSpec). Trusted code on untrusted data: call
`validate_geometry` first.

Units: the contract is in millimetres; MuJoCo runs in metres (×1e-3). Each part is one body whose
frame sits at its centre of mass with world orientation at t=0, so the body position *is* the
part's centre of mass and inertia is given explicitly from the CAD solid (never from the mesh).
What each solid collides as is `collision.Decomposer`'s decision: MuJoCo's primitive for a
checked sphere, box, cylinder or capsule (drawn as itself); else the mesh itself when convex
(MuJoCo collides with a mesh's hull), or convex pieces (geom group 3, not drawn) beside the
exact mesh, which is drawn but never collides. Geoms carry no mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from numpy.typing import NDArray

from common.models.simulation import FailureKind, Objectives, SimOptions, Tessellation, Zone
from worker.errors import Failed
from worker.simulation.collision import Decomposer
from worker.simulation.geometry import Geometry, Part, Primitive, allowed_deflection

MM = 1e-3
ZONE_RGBA = {
    "goal": (0.1, 0.75, 0.2, 0.22),
    "forbid": (0.92, 0.08, 0.08, 0.45),
    "build": (0.2, 0.4, 0.95, 0.1),
}
"""Fill of each zone kind (the video also outlines them in the opaque colour; render.py)."""
DEFAULT_FRICTION = 0.8
IMPRATIO = 10.0
"""Ratio of frictional to normal constraint impedance (with the elliptic cone; see _set_options)."""
CONTACT_TIMECONST_STEPS = 3.0
"""Contact stiffness: solref's time constant in timesteps (MuJoCo's stable minimum is 2; at 2
a box sliding on a box hops 3 mm off it, at 3 it stays within 0.2 mm)."""
CONTACT_SOLIMP = (0.95, 0.99, 0.001, 0.5, 2.0)
"""Contact impedance: 0.95 at zero penetration rising to 0.99 within 1 mm (MuJoCo's default
is 0.9–0.95)."""
PIECE_GROUP = 3
"""Collision pieces live in geom group 3, which MuJoCo does not draw by default: the video shows
the exact mesh (a geom that never collides) instead."""
ZONE_GROUP = 2
"""Zone boxes live in geom group 2 (drawn by default) and have contype = conaffinity = 0, so
nothing ever collides with them; the verdict measures distances to them instead."""


def _refused(why: str) -> Failed:
    """MuJoCo refused the model (e.g. a mesh with no volume)."""
    return Failed(FailureKind.INVALID_GEOMETRY, why)


@dataclass(frozen=True)
class PartInfo:
    label: str
    source: str
    body_id: int
    geom_ids: tuple[int, ...]
    movable: bool
    mass_kg: float
    initial_com_mm: tuple[float, float, float]
    free: bool
    """Has a free joint (these are the parts jitter perturbs)."""


@dataclass(frozen=True)
class ActuatorInfo:
    name: str
    actuator_id: int
    force_limit: float
    overload_s: float
    ctrl_scale: float
    """Contract units → MuJoCo units of the control (mm → m for slide servos, else 1)."""


@dataclass(frozen=True)
class Scene:
    model: mujoco.MjModel
    spec: mujoco.MjSpec
    parts: dict[str, PartInfo]
    zone_geoms: dict[str, int]
    actuators: dict[str, ActuatorInfo]
    extent_center_m: NDArray[np.float64]
    extent_radius_m: float
    solid_mm: dict[str, list[NDArray[np.float64]]] = field(default_factory=dict)
    """World-mm vertices of each part's solids at t=0 (for the build-zone check)."""
    decomposer: Decomposer = field(default_factory=Decomposer)
    """What the collision shapes were made of: new decompositions (for the cache), warnings."""


def _unit(v: tuple[float, float, float]) -> list[float]:
    n = math.sqrt(sum(c * c for c in v))
    return [c / n for c in v]


def build_scene(
    geom: Geometry,
    objectives: Objectives,
    options: SimOptions,
    decomposer: Decomposer | None = None,
) -> Scene:
    """The MuJoCo scene of `geom`: solver options, the look of the world, one body per part
    (parents first), the zones, the actuators; compiled. Raises Failed (INVALID_GEOMETRY) when
    MuJoCo refuses it. `decomposer` holds the cached decompositions (default: none)."""
    decomposer = decomposer or Decomposer()
    spec = mujoco.MjSpec()
    _set_options(spec, options)
    _add_world(spec, floor=objectives.floor)
    solid_mm = _add_parts(spec, geom, decomposer)
    for z in objectives.zones:
        _add_zone(spec.worldbody, z)
    _add_actuators(spec, geom)
    spec.memory = arena_bytes(
        sum(1 for g in spec.geoms if g.contype or g.conaffinity), 6 * len(geom.parts)
    )
    try:
        model = spec.compile()
    except Exception as e:  # mujoco raises ValueError with the compiler's message
        raise _refused(f"MuJoCo could not compile the scene: {e}") from None
    center, radius = _extent(solid_mm, objectives)
    return Scene(
        model=model,
        spec=spec,
        parts=_part_infos(model, geom),
        zone_geoms={
            z.name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"zone:{z.name}")
            for z in objectives.zones
        },
        actuators=_actuator_infos(model, geom),
        extent_center_m=center,
        extent_radius_m=radius,
        solid_mm=solid_mm,
        decomposer=decomposer,
    )


ARENA_MIN_BYTES = 64 * 2**20
ARENA_MAX_BYTES = 1024 * 2**20
"""The physics jail has 4 GiB; MuJoCo's arena (contacts, constraints, the solver's stack) is
sized for the scene between these bounds."""
CONTACTS_PER_GEOM = 32
"""Room for this many contacts per colliding geom (box–box gives up to 8 per pair; a geom
touches a few others at once)."""


def arena_bytes(collision_geoms: int, dofs: int) -> int:
    """MuJoCo's arena for a scene: each contact holds its record (~600 bytes) and three
    constraint rows (elliptic cone, condim 3) of Jacobian and solver data, ~16 doubles per
    degree of freedom each. Should it still overflow, MuJoCo drops contacts and warns
    (mjWARN_CONTACTFULL), and the verdict fails the run (PHYSICS_INSTABILITY)."""
    contacts = CONTACTS_PER_GEOM * collision_geoms + 1000
    per_contact = 600 + 3 * (200 + 16 * 8 * dofs)
    return int(min(ARENA_MAX_BYTES, max(ARENA_MIN_BYTES, 2 * contacts * per_contact)))


def _set_options(spec: mujoco.MjSpec, options: SimOptions) -> None:
    spec.modelname = "simjail"
    spec.compiler.degree = False  # every angle we hand MuJoCo is in radians
    spec.option.timestep = options.timestep_s
    # Never restart a diverged simulation silently: divergence is a verdict (PHYSICS_INSTABILITY).
    spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
    spec.option.integrator = int(mujoco.mjtIntegrator.mjINT_IMPLICITFAST)
    # Friction the same in every direction (README "Friction"): MuJoCo's default pyramidal cone
    # approximates Coulomb's circle by a square, so a box that should stick on a 24° slope at
    # μ 0.5 crept 7 mm in 2 s, slid off when the slope was turned 45° in the world, and a
    # statically stable tower drifted 14 mm in 10 s. The elliptic cone is the circle itself;
    # impratio 10 makes frictional constraints ten times stiffer than normal ones, so sticking
    # really sticks (~1 mm at any heading), while sliding still follows g(sin θ − μ cos θ).
    spec.option.cone = int(mujoco.mjtCone.mjCONE_ELLIPTIC)
    spec.option.impratio = IMPRATIO
    # Stiff, hard contacts: MuJoCo's default (a 20 ms time constant, solimp 0.9–0.95) lets each
    # contact sink ~0.4 mm under a 40 mm cube, and the uneven sag tilted an offset tower until
    # its top slid off. A time constant of three steps (MuJoCo keeps two stable) and solimp
    # 0.95–0.99 keep a 5-cube tower within 0.6 mm over 10 s.
    spec.default.geom.solref = [CONTACT_TIMECONST_STEPS * options.timestep_s, 1.0]
    spec.default.geom.solimp = list(CONTACT_SOLIMP)
    # Fast, faithful rendering on a CPU (DESIGN.md §7): smaller shadow map, no MSAA.
    spec.visual.quality.shadowsize = 1024
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = options.width
    spec.visual.global_.offheight = options.height
    spec.stat.meansize = 0.05


def _add_world(spec: mujoco.MjSpec, *, floor: bool) -> None:
    """Lights, sky and (with `floor`) the ground plane at z = 0."""
    world = spec.worldbody
    # One light overhead that casts the shadows, one fill light from the camera side.
    world.add_light(
        name="sun", pos=[0, 0, 5], dir=[0.2, 0.3, -1], castshadow=True, diffuse=[0.6, 0.6, 0.6]
    )
    world.add_light(
        name="fill",
        pos=[2, -2, 3],
        dir=[-0.5, 0.5, -0.6],
        castshadow=False,
        diffuse=[0.35, 0.35, 0.35],
    )
    spec.visual.headlight.ambient = [0.3, 0.3, 0.3]
    spec.add_texture(
        name="sky",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        rgb1=[0.75, 0.82, 0.90],
        rgb2=[0.95, 0.96, 0.98],
        width=64,
        height=64,
    )
    if floor:
        spec.add_texture(
            name="grid",
            type=mujoco.mjtTexture.mjTEXTURE_2D,
            builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
            rgb1=[0.86, 0.87, 0.89],
            rgb2=[0.78, 0.79, 0.82],
            width=256,
            height=256,
        )
        mat = spec.add_material(
            name="floor", texrepeat=[10, 10]
        )  # no reflectance: a mirror pass costs ~25% of a frame
        mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
        world.add_geom(
            name="floor",
            type=mujoco.mjtGeom.mjGEOM_PLANE,
            size=[0, 0, 0.05],
            material="floor",
            friction=[DEFAULT_FRICTION, 0.005, 0.0001],
        )


def _add_parts(
    spec: mujoco.MjSpec, geom: Geometry, decomposer: Decomposer
) -> dict[str, list[NDArray[np.float64]]]:
    """One body per part, parents first: a child body's position is relative to its parent's
    frame, and every frame here has world orientation at t=0, so relative = difference of
    centres of mass. Returns each part's solids' world-mm vertices at t=0."""
    by_label = {p.label: p for p in geom.parts}
    bodies: dict[str, mujoco.MjsBody] = {"world": spec.worldbody}
    solid_mm: dict[str, list[NDArray[np.float64]]] = {}
    pending = list(geom.parts)
    while pending:
        ready = [p for p in pending if (p.meta.joint.parent if p.meta.joint else "world") in bodies]
        if not ready:  # validate_geometry rules this out; kept as a guard
            raise _refused("joint parents form a cycle")
        for p in ready:
            parent = p.meta.joint.parent if p.meta.joint else "world"
            origin = np.zeros(3) if parent == "world" else np.array(by_label[parent].com_mm) * MM
            bodies[p.label], solid_mm[p.label] = _add_body(
                spec, bodies[parent], origin, p, decomposer, geom.tessellation
            )
            if parent != "world":
                # A part never collides with its joint parent (an axle in its bearing). MuJoCo
                # filters parent-child contacts itself, but not when the parent is welded to the
                # world (a fixed part), so exclude the pair explicitly.
                spec.add_exclude(bodyname1=parent, bodyname2=p.label)
            pending.remove(p)
    return solid_mm


def _add_body(
    spec: mujoco.MjSpec,
    parent: mujoco.MjsBody,
    parent_com_m: NDArray[np.float64],
    p: Part,
    decomposer: Decomposer,
    tessellation: Tessellation,
) -> tuple[mujoco.MjsBody, list[NDArray[np.float64]]]:
    """The part's body at its centre of mass, with the CAD solid's mass and inertia, its joint,
    and each solid's geoms (which never contribute mass)."""
    com = np.array(p.com_mm) * MM
    body = parent.add_body(name=p.label, pos=(com - parent_com_m).tolist())
    body.explicitinertial = True
    body.mass = p.mass_kg
    body.ipos = [0.0, 0.0, 0.0]
    # mm⁵ × kg/m³ → kg·mm² (×1e-9) → kg·m² (×1e-6)
    k = p.density * 1e-15
    body.fullinertia = [c * k for c in p.inertia_mm5]
    _add_joint(body, p)
    rgba = list(p.color or (0.7, 0.7, 0.7, 1.0))
    surface: dict[str, Any] = {
        "friction": [p.meta.friction or DEFAULT_FRICTION, 0.005, 0.0001],
        # MuJoCo takes the larger friction of two touching geoms unless one has priority: a
        # part's own friction wins over the default surfaces.
        "priority": 1 if p.meta.friction is not None else 0,
        "mass": 0.0,
    }
    vertices = []
    for si, m in enumerate(p.solids):
        v, t = m.arrays()
        vertices.append(v)
        name = f"{p.label}__solid{si}"
        if m.primitive is not None:  # checked against the mesh by validate_geometry
            _add_primitive(body, name, m.primitive, com, rgba, surface)
            decomposer.stats["primitive"] += 1
            continue
        spec.add_mesh(
            name=f"{name}_mesh", uservert=((v * MM) - com).ravel().tolist(),
            userface=t.ravel().tolist(),
        )  # fmt: skip
        delta = allowed_deflection(tessellation, float(np.linalg.norm(v.max(0) - v.min(0))))
        pieces = decomposer.pieces(p.label, si, m, v, t, delta)
        if pieces is None:  # convex (or the hull fallback): the mesh collides as its hull
            body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_MESH, meshname=f"{name}_mesh",
                          rgba=rgba, **surface)  # fmt: skip
            continue
        body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_MESH, meshname=f"{name}_mesh",
                      rgba=rgba, contype=0, conaffinity=0, mass=0.0)  # fmt: skip
        for k_, piece in enumerate(pieces):
            spec.add_mesh(name=f"{name}_piece{k_}", uservert=((piece * MM) - com).ravel().tolist())
            body.add_geom(name=f"{name}_piece{k_}", type=mujoco.mjtGeom.mjGEOM_MESH,
                          meshname=f"{name}_piece{k_}", rgba=[*rgba[:3], 0.0],
                          group=PIECE_GROUP, **surface)  # fmt: skip
    return body, vertices


def _add_primitive(
    body: mujoco.MjsBody,
    name: str,
    prim: Primitive,
    com_m: NDArray[np.float64],
    rgba: list[float],
    surface: dict[str, Any],
) -> None:
    """MuJoCo's own shape at the claimed (and checked) size and pose."""
    kind = {
        "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
        "box": mujoco.mjtGeom.mjGEOM_BOX,
        "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
        "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    }[prim.kind]
    q = np.array(prim.quat, dtype=np.float64)
    q /= np.linalg.norm(q)
    body.add_geom(
        name=name,
        type=kind,
        pos=(np.array(prim.center) * MM - com_m).tolist(),
        quat=q.tolist(),
        size=(np.array(prim.size) * MM).tolist(),
        rgba=rgba,
        **surface,
    )


def _add_actuators(spec: mujoco.MjSpec, geom: Geometry) -> None:
    for p in geom.parts:
        a = p.meta.joint.actuator if p.meta.joint else None
        if a is None:
            continue
        act = spec.add_actuator(name=p.label, target=p.label)
        act.trntype = mujoco.mjtTrn.mjTRN_JOINT
        scale = _ctrl_scale(p)
        # Gains are given per contract unit (N/mm on a slide), MuJoCo wants them per metre.
        if a.kind == "motor":
            act.set_to_motor()
        elif a.kind == "position":
            act.set_to_position(kp=a.kp / scale)
        else:
            act.set_to_velocity(kv=a.kv / scale)
        if a.ctrl_range is not None:
            act.ctrllimited = 1
            act.ctrlrange = [a.ctrl_range[0] * scale, a.ctrl_range[1] * scale]
        act.forcelimited = 1
        act.forcerange = [-a.force_limit, a.force_limit]


def _part_infos(model: mujoco.MjModel, geom: Geometry) -> dict[str, PartInfo]:
    by_label = {p.label: p for p in geom.parts}
    parts: dict[str, PartInfo] = {}
    for p in geom.parts:
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, p.label)
        gids = tuple(  # the geoms that collide (a drawn-only mesh beside pieces does not)
            g
            for g in range(model.ngeom)
            if model.geom_bodyid[g] == bid and (model.geom_contype[g] or model.geom_conaffinity[g])
        )
        movable = not p.meta.fixed and not (
            p.meta.joint is not None and p.meta.joint.type == "weld" and _root_is_world(p, by_label)
        )
        parts[p.label] = PartInfo(
            label=p.label,
            source=p.source,
            body_id=bid,
            geom_ids=gids,
            movable=movable and _has_dof_chain(p, by_label),
            mass_kg=p.mass_kg,
            initial_com_mm=p.com_mm,
            free=p.meta.joint is None and not p.meta.fixed,
        )
    return parts


def _actuator_infos(model: mujoco.MjModel, geom: Geometry) -> dict[str, ActuatorInfo]:
    return {
        p.label: ActuatorInfo(
            name=p.label,
            actuator_id=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, p.label),
            force_limit=p.meta.joint.actuator.force_limit,
            overload_s=p.meta.joint.actuator.overload_s,
            ctrl_scale=_ctrl_scale(p),
        )
        for p in geom.parts
        if p.meta.joint is not None and p.meta.joint.actuator is not None
    }


def _add_joint(body: mujoco.MjsBody, p: Part) -> None:
    j = p.meta.joint
    if p.meta.fixed:
        return  # no joint: welded to the world
    if j is None:
        body.add_freejoint(name=p.label)
        return
    if j.type == "weld":
        return  # no joint: welded to its parent
    anchor = np.array(j.anchor if j.anchor is not None else p.com_mm) * MM
    pos = (anchor - np.array(p.com_mm) * MM).tolist()
    jt = mujoco.mjtJoint.mjJNT_HINGE if j.type == "hinge" else mujoco.mjtJoint.mjJNT_SLIDE
    joint = body.add_joint(name=p.label, type=jt, axis=_unit(j.axis), pos=pos)
    # MuJoCo 4 takes linear, quadratic and cubic terms; a slide's N per mm/s is 1000 N per m/s.
    joint.damping = [j.damping / (MM if j.type == "slide" else 1.0), 0.0, 0.0]
    if j.range is not None:
        joint.limited = 1
        lo, hi = j.range
        joint.range = (
            [math.radians(lo), math.radians(hi)] if j.type == "hinge" else [lo * MM, hi * MM]
        )


def _ctrl_scale(p: Part) -> float:
    """Servo targets on a slide are millimetres (or mm/s) in the contract, metres in MuJoCo."""
    j = p.meta.joint
    a = j.actuator if j is not None else None
    if j is not None and a is not None and j.type == "slide" and a.kind != "motor":
        return MM
    return 1.0


def _root_is_world(p: Part, by_label: dict[str, Part]) -> bool:
    j = p.meta.joint
    return j is None or j.parent == "world" or by_label[j.parent].meta.fixed


def _has_dof_chain(p: Part, by_label: dict[str, Part]) -> bool:
    """True when the part can move: it, or an ancestor, has a degree of freedom."""
    cur: Part | None = p
    while cur is not None:
        if cur.meta.fixed:
            return False
        j = cur.meta.joint
        if j is None:
            return True  # free joint
        if j.type != "weld":
            return True
        cur = None if j.parent == "world" else by_label[j.parent]
    return False


def _add_zone(world: mujoco.MjsBody, z: Zone) -> None:
    lo, hi = np.array(z.min) * MM, np.array(z.max) * MM
    world.add_geom(
        name=f"zone:{z.name}",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        pos=((lo + hi) / 2).tolist(),
        size=((hi - lo) / 2).tolist(),
        rgba=list(ZONE_RGBA[z.kind]),
        contype=0,
        conaffinity=0,
        group=ZONE_GROUP,
        mass=0.0,
    )


def _extent(
    solid_mm: dict[str, list[NDArray[np.float64]]], objectives: Objectives
) -> tuple[NDArray[np.float64], float]:
    pts = [v for vs in solid_mm.values() for v in vs]
    for z in objectives.zones:
        pts.append(np.array([z.min, z.max], dtype=np.float64))
    allp = np.concatenate(pts) * MM
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2) or 0.1

"""Geometry → MuJoCo model (MjSpec). Trusted code on untrusted data: call
`validate_geometry` first.

Units: the contract is in millimetres; MuJoCo runs in metres (×1e-3). Each part is one body whose
frame sits at its centre of mass with world orientation at t=0, so the body position *is* the
part's centre of mass and inertia is given explicitly from the CAD solid (never from the mesh).
Each solid is one mesh geom; MuJoCo collides with its convex hull and renders the exact mesh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np
from numpy.typing import NDArray

from common.models.simulation import FailureKind, Objectives, SimOptions, Zone
from worker.errors import Failed
from worker.simulation.geometry import Geometry, Part

MM = 1e-3
ZONE_RGBA = {
    "goal": (0.1, 0.75, 0.2, 0.22),
    "forbid": (0.92, 0.08, 0.08, 0.45),
    "build": (0.2, 0.4, 0.95, 0.1),
}
"""Fill of each zone kind (the video also outlines them in the opaque colour; render.py)."""
DEFAULT_FRICTION = 0.8
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


def _unit(v: tuple[float, float, float]) -> list[float]:
    n = math.sqrt(sum(c * c for c in v))
    return [c / n for c in v]


def build_scene(geom: Geometry, objectives: Objectives, options: SimOptions) -> Scene:
    """The MuJoCo scene of `geom`: solver options, the look of the world, one body per part
    (parents first), the zones, the actuators; compiled. Raises Failed (INVALID_GEOMETRY) when
    MuJoCo refuses it."""
    spec = mujoco.MjSpec()
    _set_options(spec, options)
    _add_world(spec, floor=objectives.floor)
    solid_mm = _add_parts(spec, geom)
    for z in objectives.zones:
        _add_zone(spec.worldbody, z)
    _add_actuators(spec, geom)
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
    )


def _set_options(spec: mujoco.MjSpec, options: SimOptions) -> None:
    spec.modelname = "simjail"
    spec.compiler.degree = False  # every angle we hand MuJoCo is in radians
    spec.option.timestep = options.timestep_s
    # Never restart a diverged simulation silently: divergence is a verdict (PHYSICS_INSTABILITY).
    spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
    spec.option.integrator = int(mujoco.mjtIntegrator.mjINT_IMPLICITFAST)
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


def _add_parts(spec: mujoco.MjSpec, geom: Geometry) -> dict[str, list[NDArray[np.float64]]]:
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
            bodies[p.label], solid_mm[p.label] = _add_body(spec, bodies[parent], origin, p)
            if parent != "world":
                # A part never collides with its joint parent (an axle in its bearing). MuJoCo
                # filters parent-child contacts itself, but not when the parent is welded to the
                # world (a fixed part), so exclude the pair explicitly.
                spec.add_exclude(bodyname1=parent, bodyname2=p.label)
            pending.remove(p)
    return solid_mm


def _add_body(
    spec: mujoco.MjSpec, parent: mujoco.MjsBody, parent_com_m: NDArray[np.float64], p: Part
) -> tuple[mujoco.MjsBody, list[NDArray[np.float64]]]:
    """The part's body at its centre of mass, with the CAD solid's mass and inertia, its joint,
    and one mesh geom per solid (which never contributes mass)."""
    com = np.array(p.com_mm) * MM
    body = parent.add_body(name=p.label, pos=(com - parent_com_m).tolist())
    body.explicitinertial = True
    body.mass = p.mass_kg
    body.ipos = [0.0, 0.0, 0.0]
    # mm⁵ × kg/m³ → kg·mm² (×1e-9) → kg·m² (×1e-6)
    k = p.density * 1e-15
    body.fullinertia = [c * k for c in p.inertia_mm5]
    _add_joint(body, p)
    vertices = []
    for si, m in enumerate(p.solids):
        v, t = m.arrays()
        vertices.append(v)
        mesh_name = f"{p.label}__mesh{si}"
        spec.add_mesh(
            name=mesh_name, uservert=((v * MM) - com).ravel().tolist(), userface=t.ravel().tolist()
        )
        body.add_geom(
            name=f"{p.label}__solid{si}",
            type=mujoco.mjtGeom.mjGEOM_MESH,
            meshname=mesh_name,
            rgba=list(p.color or (0.7, 0.7, 0.7, 1.0)),
            friction=[p.meta.friction or DEFAULT_FRICTION, 0.005, 0.0001],
            # MuJoCo takes the larger friction of two touching geoms unless one has priority: a
            # part's own friction wins over the default surfaces.
            priority=1 if p.meta.friction is not None else 0,
            mass=0.0,
        )
    return body, vertices


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
        gids = tuple(
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"{p.label}__solid{i}")
            for i in range(len(p.solids))
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

"""Verdict rules (DESIGN.md §4). Pure reading of MjData; never steps the simulation.

The first decisive event wins and is latched: a failure (forbid zone touched, a part out of
bounds, divergence, a motor held at its force limit too long) or a success (the target's centre of
mass held inside a goal zone for `goal_hold_s`). `stop_on_decision` only ends the run at that
moment; it never changes the verdict.

The rules are checked after every physics step (`step`), and along the path the step moved each
part: MuJoCo moves every joint at a constant velocity within a step (it integrates positions
with the step's new velocities), so the states in between are `mj_integratePos` of the earlier
state over a fraction of the step, and a part too fast to be seen in a zone at any step is seen
passing through it; a target must stay in the goal all along, not only at the steps. Only the
contact-force bound, which needs a scan of the contacts, waits for `update`, every
`check_every_s` of simulated time.

Besides the latched Decision, the Verdict keeps a short log of every rule that fired (`events`,
the first time each rule fired for each part), including those after the decision, which did
not count: what the report shows as "the rules that fired and when".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import mujoco
import numpy as np

from common.models.simulation import FailureKind, Objectives, Zone
from worker.errors import Failure
from worker.simulation.builder import MM, Scene
from worker.text import quoted

PENETRATION_TOLERANCE_MM = 0.5
"""Start-up overlap allowed between parts (tessellation of touching faces)."""
BUILD_ZONE_TOLERANCE_MM = 1e-3
MAX_SPEED_M_S = 200.0
"""A part (or a slide) faster than this has left physics (explosion, solver divergence)."""
MAX_ANGULAR_SPEED_RAD_S = 10_000.0
"""~95 000 rpm: a body or hinge turning faster has left physics. A gear jammed on its hinge
never moves its centre of mass, so only its spin shows the blow-up."""
MAX_CONTACT_FORCE_N = 1e6
"""100 tonnes-force: far beyond anything the desk-sized parts of a design can press with. Two
jammed gears reported 3.9 × 10¹⁵ N under a "stable" verdict before this bound."""
WARNING_MEANING = {
    mujoco.mjtWarning.mjWARN_INERTIA: "a body's inertia is not physical",
    mujoco.mjtWarning.mjWARN_CONTACTFULL: "the contact arena overflowed and MuJoCo dropped "
    "contacts, so parts could pass through each other",
    mujoco.mjtWarning.mjWARN_CNSTRFULL: "the constraint arena overflowed and MuJoCo dropped "
    "constraints",
    mujoco.mjtWarning.mjWARN_BADQPOS: "positions became NaN or enormous",
    mujoco.mjtWarning.mjWARN_BADQVEL: "velocities became NaN or enormous",
    mujoco.mjtWarning.mjWARN_BADQACC: "accelerations became NaN or enormous",
    # A control beyond MuJoCo's mjMAXVAL (1e10): MuJoCo zeroes every control and carries on, so
    # without this the run "stayed stable" with its actuators silently switched off.
    mujoco.mjtWarning.mjWARN_BADCTRL: "a control was NaN or enormous and MuJoCo switched the "
    "actuators off",
}
"""Every MuJoCo warning, and what it means for the run: any of them is PHYSICS_INSTABILITY."""
ARENA_WARNINGS = (mujoco.mjtWarning.mjWARN_CONTACTFULL, mujoco.mjtWarning.mjWARN_CNSTRFULL)
"""MuJoCo ran out of arena memory: it dropped contacts or constraints for that step."""
MAX_EVENTS = 32
"""Rule firings kept per run (the report's list); the first decision is always among them."""
GOAL_HELD, STABLE = "GOAL_HELD", "STABLE"
"""The rule names of a success in `events` (the target held in a goal; a run without a target
that stayed stable to the end). Failures carry their FailureKind's name."""


@dataclass(frozen=True)
class Decision:
    """What decided a run, and when: a Failure, or (failure None) a success and its sentence."""

    time_s: float
    failure: Failure | None
    success: str = ""
    culprits: tuple[str, ...] = ()
    """Labels of the parts the decision is about (the part that touched, left, exploded, was
    overloaded, or the target); empty when no part is to blame (NaN in the state)."""

    @property
    def reason(self) -> str:
        return self.failure.reason if self.failure is not None else self.success


@dataclass(frozen=True)
class Event:
    """A rule that fired: when, about which parts, and whether it was the decision."""

    time_s: float
    rule: str
    """A FailureKind's name, GOAL_HELD or STABLE."""
    parts: tuple[str, ...]
    reason: str
    decisive: bool

    def brief(self) -> dict[str, object]:
        return {
            "t_s": round(self.time_s, 6),
            "rule": self.rule,
            "parts": list(self.parts),
            "reason": self.reason,
            "decisive": self.decisive,
        }


@dataclass(frozen=True)
class Stretch:
    """What a stretch `clearance` proved clear tells the Verdict: its length, where the target
    was."""

    held_steps: int
    """The steps it adds to the hold when the target is in the goal: its own, and the one
    before it when the anchor was judged in full and that step was not yet."""
    target_in_goal: bool | None
    """True: in a goal zone all along; False: outside every one all along; None: no target."""
    anchored_at_s: float
    """The time of the anchor's state."""
    speeds_m_s: np.ndarray
    """Each movable part's speed at the stretch's end."""


class Verdict:
    """Tracks one run. Call `initial` after mj_forward at t=0, `step` after every physics step,
    `update` every check with the largest contact force, `halt` if MuJoCo cannot go on, and
    `final` after the last step's mj_forward; all return the latched Decision once there is
    one."""

    def __init__(self, scene: Scene, objectives: Objectives) -> None:
        self.scene = scene
        self.obj = objectives
        self.decision: Decision | None = None
        self.halted = False
        """MuJoCo stopped (`halt`): the run cannot go on."""
        self.goal_zones = [z for z in objectives.zones if z.kind == "goal"]
        self.forbid_zones = [z for z in objectives.zones if z.kind == "forbid"]
        self.build_zones = [z for z in objectives.zones if z.kind == "build"]
        self.target = scene.parts[objectives.target] if objectives.target else None
        m = scene.model
        # Parts that can touch a forbid zone: everything but the environment's fixed fixtures.
        self.watched_geoms = np.array(
            [
                g
                for p in scene.parts.values()
                if p.movable or p.source == "design"
                for g in p.geom_ids
            ],
            dtype=np.int64,
        )
        self.movable_bodies = [(p.label, p.body_id) for p in scene.parts.values() if p.movable]
        # Who owns a geom or a body: from the scene's own table, never from MJCF names (which
        # a label could forge, e.g. one containing the name separator).
        self._geom_label = {g: p.label for p in scene.parts.values() for g in p.geom_ids}
        self._body_label = {p.body_id: p.label for p in scene.parts.values()}
        self._source = {p.label: p.source for p in scene.parts.values()}
        self._dt = float(m.opt.timestep)
        self.hold_steps = 0
        """The hold in whole steps, on every path alike (a sum of float step lengths rounds
        differently from a product and once decided a step apart)."""
        self._hold_needed = max(0, math.ceil(objectives.goal_hold_s / self._dt - 1e-6))
        self.best_hold_s = 0.0
        self.goal_reached_at: float | None = None
        self.min_distance_mm = math.inf
        self._fromto = np.zeros(6)
        self._body_ids = np.array([b for _, b in self.movable_bodies], dtype=np.int64)
        self.max_speed_m_s = np.zeros(len(self.movable_bodies))
        self._peak_m_s = np.zeros(len(self.movable_bodies))
        self.events: list[Event] = []
        self._fired: set[tuple[str, tuple[str, ...]]] = set()
        # Per step, vectorised: the geoms' bodies and radii, the joints' speeds, the
        # actuators' limits, the zones' boxes (m), the bounds (mm).
        self._geom_body = m.geom_bodyid[self.watched_geoms]
        self._rbound = m.geom_rbound[self.watched_geoms]
        self._thin = 2 * m.geom_aabb[self.watched_geoms, 3:].min(axis=1) if m.ngeom else None
        hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
        joints = [j for j in range(m.njnt) if int(m.jnt_type[j]) in (hinge, slide)]
        self._joint_dof = np.array([m.jnt_dofadr[j] for j in joints], dtype=np.int64)
        self._joint_bound = np.array(
            [
                MAX_ANGULAR_SPEED_RAD_S if int(m.jnt_type[j]) == hinge else MAX_SPEED_M_S
                for j in joints
            ]
        )
        self._joint_names = [(self._joint_part(m, j), int(m.jnt_type[j]) == hinge) for j in joints]
        self._actuators = list(scene.actuators.values())
        self._act_ids = np.array([a.actuator_id for a in self._actuators], dtype=np.int64)
        self._act_limit = np.array([a.force_limit for a in self._actuators]) * OVERLOAD_FRACTION
        self.overload_s = np.zeros(len(self._actuators))
        self._below_s = np.zeros(len(self._actuators))
        self._zone_box = {
            z.name: (np.array(z.min) * MM, np.array(z.max) * MM)
            for z in self.forbid_zones + self.goal_zones
        }
        bounds = objectives.bounds
        self._bounds = (np.array(bounds.min), np.array(bounds.max)) if bounds else None
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None
        """Time, qpos and qvel of the state the kinematics show: after `mj_step` the one before
        it (MuJoCo computes positions and velocities of bodies before it integrates)."""
        self._prev: _Pose | None = None
        self._scratch: mujoco.MjData | None = None
        self.stale = False
        """Steps went by unjudged (`skip`): `resume` before judging again."""

    # --- events ------------------------------------------------------------------------------

    def _decide(
        self, kind: FailureKind | None, reason: str, t: float, culprits: tuple[str, ...] = ()
    ) -> Decision:
        decisive = self.decision is None
        if decisive:
            if kind is None:
                self.decision = Decision(t, None, reason, culprits)
            else:
                self.decision = Decision(t, Failure(kind, reason), culprits=culprits)
        rule = kind.value if kind is not None else GOAL_HELD if self.target else STABLE
        self._log(rule, culprits, reason, t, decisive)
        assert self.decision is not None
        return self.decision

    def _log(
        self, rule: str, parts: tuple[str, ...], reason: str, t: float, decisive: bool
    ) -> None:
        """Record the first firing of `rule` for `parts` (cheap: rules fire rarely)."""
        key = (rule, parts)
        if key in self._fired or (len(self.events) >= MAX_EVENTS and not decisive):
            return
        self._fired.add(key)
        self.events.append(Event(t, rule, parts, reason, decisive))

    def initial(self, m: mujoco.MjModel, d: mujoco.MjData) -> Decision | None:
        """Build zone and start-up interpenetration, at t = 0 (after mj_forward, so the
        kinematics are those of d.qpos)."""
        self._last = (float(d.time), d.qpos.copy(), d.qvel.copy())
        self._prev = self._pose(d, *self._last)
        if self.build_zones:
            for label, verts in self.scene.solid_mm.items():
                if self.scene.parts[label].source != "design":
                    continue
                allv = np.concatenate(verts)
                if not any(_inside_all(allv, z) for z in self.build_zones):
                    names = ", ".join(z.name for z in self.build_zones)
                    return self._decide(
                        FailureKind.BUILD_ZONE_VIOLATION,
                        f"{self._part(label)} is not entirely inside the build zone ({names}) "
                        "at t=0.",
                        0.0,
                        (label,),
                    )
        for i in range(d.ncon):
            c = d.contact[i]
            if c.dist < -PENETRATION_TOLERANCE_MM * MM:
                a, b = self._geom_owner(m, c.geom1), self._geom_owner(m, c.geom2)
                floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
                if floor in (c.geom1, c.geom2) and floor >= 0:
                    part = b if c.geom1 == floor else a
                    low = min(float(v[:, 2].min()) for v in self.scene.solid_mm[part])
                    return self._decide(
                        FailureKind.INITIAL_PENETRATION,
                        f"{self._part(part)} starts {-low:.1f} mm below the floor, z = 0 "
                        "(build123d centres parts on the origin: lift it, e.g. with "
                        "Pos(0, 0, z)).",
                        0.0,
                        (part,),
                    )
                return self._decide(
                    FailureKind.INITIAL_PENETRATION,
                    f"{self._part(a)} and {self._part(b, lower=True)} overlap by "
                    f"{-c.dist / MM:.1f} mm at t=0.",
                    0.0,
                    (a, b),
                )
        return None

    def step(self, m: mujoco.MjModel, d: mujoco.MjData) -> Decision | None:
        """Every rule but the contact force, after one `mj_step`, for the state before it (the
        one its kinematics show) and along the path from the state before that."""
        now = (float(d.time), d.qpos.copy(), d.qvel.copy())
        if self._last is None:  # not started by `initial`
            self._last = now
        pose = self._pose(d, *self._last)
        self._last = now
        return self._advance_to(m, d, pose)

    def update(
        self, m: mujoco.MjModel, d: mujoco.MjData, dt: float, contact_force_n: float = 0.0
    ) -> Decision | None:
        """The contact-force bound, every check: `contact_force_n` is the largest contact
        normal force now (`dt`, the simulated time since the previous check, is not needed
        any more and kept for the callers)."""
        if contact_force_n > MAX_CONTACT_FORCE_N:
            t = float(d.time)
            return self._decide(
                FailureKind.PHYSICS_INSTABILITY,
                f"A contact force reached {contact_force_n:.3g} N at t={t:.2f} s (bound "
                f"{MAX_CONTACT_FORCE_N:.0e} N): parts are jammed into each other and the solver "
                "diverged.",
                t,
            )
        return self.decision

    @property
    def hold_s(self) -> float:
        return self.hold_steps * self._dt

    def hold_completes(self, steps: int) -> bool:
        """Whether `steps` more held steps complete the hold."""
        return self.hold_steps + steps >= self._hold_needed

    def resume(self, m: mujoco.MjModel, d: mujoco.MjData) -> None:
        """Judge on from the state `d` holds (positions and velocities; its kinematics may be
        stale), after steps proven clear without the Verdict (`clearance`): the path into it
        needs no judging."""
        if self._scratch is None:
            self._scratch = mujoco.MjData(m)
        s = self._scratch
        s.qpos[:], s.qvel[:] = d.qpos, d.qvel
        mujoco.mj_kinematics(m, s)
        mujoco.mj_comPos(m, s)
        mujoco.mj_comVel(m, s)
        self._last = (float(d.time), d.qpos.copy(), d.qvel.copy())
        self._prev = self._pose(s, *self._last)
        self.stale = False

    def skip(self, d: mujoco.MjData, stretch: Stretch) -> None:
        """A stretch `clearance` proved clear: no rule fired; the hold grew by its length if
        the target was in the goal all along; the speeds and the distance to the goal are read
        at its end."""
        self.stale = True
        speed = stretch.speeds_m_s
        np.maximum(self._peak_m_s, speed, out=self._peak_m_s)
        np.maximum(self.max_speed_m_s, speed, out=self.max_speed_m_s)
        if self.target is None:
            return
        if stretch.target_in_goal:
            if self.goal_reached_at is None:
                self.goal_reached_at = stretch.anchored_at_s
            self.hold_steps += stretch.held_steps
            self.best_hold_s = max(self.best_hold_s, self.hold_s)
            self.min_distance_mm = 0.0
        else:
            self.hold_steps = 0
            dist = goal_distance_mm(d.xipos[self.target.body_id] / MM, self.goal_zones)
            self.min_distance_mm = min(self.min_distance_mm, dist)

    def peak_speeds_m_s(self) -> np.ndarray:
        """Each movable part's top speed since the last call (the plots: a peak between two
        samples survives)."""
        peak = self._peak_m_s.copy()
        self._peak_m_s[:] = 0.0
        return peak

    def halt(self, d: mujoco.MjData, error: Exception) -> Decision:
        """MuJoCo raised instead of stepping (it ran out of arena memory for the step's
        contacts and constraints, say): the run ends here, invalid."""
        self.halted = True
        t = float(d.time)
        if "out of memory" in str(error) or "stack overflow" in str(error):
            why = (
                f"The simulation is invalid at t={t:.2f} s: MuJoCo ran out of memory for the "
                f"contacts and constraints of a step ({d.ncon} contacts); the parts press on "
                "each other in more places than the physics can hold."
            )
        else:
            why = f"MuJoCo stopped the simulation at t={t:.2f} s: {quoted(str(error), 300)}."
        return self._decide(FailureKind.PHYSICS_INSTABILITY, why, t)

    def final(self, m: mujoco.MjModel, d: mujoco.MjData) -> Decision:
        """After the last step and an mj_forward: the last stretch of path, then the verdict
        only the end can give."""
        if not self.halted:
            self._advance_to(m, d, self._pose(d, float(d.time), d.qpos.copy(), d.qvel.copy()))
        if self.decision is not None:
            return self.decision
        t = float(d.time)
        if self.target is not None:
            return self._decide(
                FailureKind.GOAL_NOT_REACHED,
                f"{self._part(self.target.label)} did not stay in the goal for "
                f"{self.obj.goal_hold_s:g} s (best hold {self.best_hold_s:.2f} s, closest "
                f"{self.min_distance_mm:.1f} mm).",
                t,
                (self.target.label,),
            )
        return self._decide(None, f"The simulation ran {t:.2f} s and stayed stable.", t)

    # --- one step ----------------------------------------------------------------------------

    def _pose(self, d: mujoco.MjData, t: float, qpos: np.ndarray, qvel: np.ndarray) -> _Pose:
        """The state whose kinematics `d` shows (time, positions and velocities given): the
        watched geoms' centres and speeds, the movable parts' centre-of-mass speeds and spins,
        the target's centre of mass."""
        g, gb = self.watched_geoms, self._geom_body
        xpos = d.geom_xpos[g]
        spin = np.linalg.norm(d.cvel[gb, :3], axis=1)
        gspeed = np.linalg.norm(point_velocity(d, gb, xpos), axis=1)
        b = self._body_ids
        com_speed = np.linalg.norm(point_velocity(d, b, d.xipos[b]), axis=1)
        body_spin = np.linalg.norm(d.cvel[b, :3], axis=1)
        target = d.xipos[self.target.body_id].copy() if self.target is not None else None
        return _Pose(t, qpos, qvel, xpos, gspeed, spin, com_speed, body_spin, target)

    def _advance_to(self, m: mujoco.MjModel, d: mujoco.MjData, b: _Pose) -> Decision | None:
        """The rules for state `b`, which `d`'s kinematics show, and the path to it from the
        previous one, in the order of the README's table."""
        a = self._prev or b
        self._prev = b
        dt = b.time - a.time
        blow_up = self._blow_up(m, d, b)
        if blow_up is not None:
            why, culprits = blow_up
            return self._decide(FailureKind.PHYSICS_INSTABILITY, why, b.time, culprits)
        out = self._out_of_bounds(d, b.time)
        if out is not None:
            return out
        for z in self.forbid_zones:
            hit = self._forbid_touch(m, d, a, b, z)
            if hit is not None:
                label, t, within = hit
                return self._decide(
                    FailureKind.FORBID_ZONE_HIT,
                    f"{self._part(label)} touched the forbidden zone {z.name!r} at "
                    + (
                        f"t={t:.3f} s (passing through it within one step)."
                        if within
                        else f"t={t:.2f} s."
                    ),
                    t,
                    (label,),
                )
        overloaded = self._overload(d, dt, b.time)
        if overloaded is not None:
            return overloaded
        if self.target is not None and dt > 0:
            return self._goal(m, a, b)
        return self.decision

    def _blow_up(
        self, m: mujoco.MjModel, d: mujoco.MjData, b: _Pose
    ) -> tuple[str, tuple[str, ...]] | None:
        """Why the state has left physics (one sentence) and the parts to blame, or None: a
        MuJoCo warning (any of them), NaN, a part's centre of mass, a body's spin or a joint
        beyond the documented bounds. (The contact force: `update`.)"""
        t = b.time
        counts = d.warning.number
        fired = [w for w in WARNING_MEANING if counts[w] > 0]
        if fired:
            names = ", ".join(mujoco.mjtWarning(w).name for w in fired)
            arena = [w for w in fired if w in ARENA_WARNINGS]
            if arena:
                why = WARNING_MEANING[arena[0]]
                return f"The simulation is invalid at t={t:.2f} s: {why} ({names}).", ()
            return f"The simulation diverged at t={t:.2f} s ({names}).", ()
        if not (np.isfinite(b.qpos).all() and np.isfinite(b.qvel).all()):
            return f"The simulation diverged at t={t:.2f} s (NaN in the state).", ()
        np.maximum(self._peak_m_s, b.com_speed, out=self._peak_m_s)
        self.max_speed_m_s = np.maximum(self.max_speed_m_s, b.com_speed)
        if b.com_speed.size and b.com_speed.max() > MAX_SPEED_M_S:
            i = int(b.com_speed.argmax())
            label = self.movable_bodies[i][0]
            return (
                f"{self._part(label)} reached {b.com_speed[i]:.0f} m/s at t={t:.2f} s; "
                "the simulation exploded."
            ), (label,)
        if b.body_spin.size and b.body_spin.max() > MAX_ANGULAR_SPEED_RAD_S:
            i = int(b.body_spin.argmax())
            label = self.movable_bodies[i][0]
            return (
                f"{self._part(label)} spun at {b.body_spin[i]:.0f} rad/s at t={t:.2f} s (bound "
                f"{MAX_ANGULAR_SPEED_RAD_S:.0f} rad/s); the simulation exploded."
            ), (label,)
        if self._joint_dof.size:
            over = np.flatnonzero(np.abs(b.qvel[self._joint_dof]) > self._joint_bound)
            if over.size:
                i = int(over[0])
                name, hinge = self._joint_names[i]
                v, bound = abs(float(b.qvel[self._joint_dof[i]])), self._joint_bound[i]
                unit = "rad/s" if hinge else "m/s"
                return (
                    f"The joint of {self._part(name, lower=True)} moved at {v:.0f} {unit} at "
                    f"t={t:.2f} s (bound {bound:.0f} {unit}); the simulation exploded."
                ), (name,)
        return None

    def _out_of_bounds(self, d: mujoco.MjData, t: float) -> Decision | None:
        if self._bounds is None or not self._body_ids.size:
            return None
        com = d.xipos[self._body_ids] / MM
        lo, hi = self._bounds
        out = np.flatnonzero(~np.all((com >= lo) & (com <= hi), axis=1))
        if not out.size:
            return None
        label, p = self.movable_bodies[int(out[0])][0], com[int(out[0])]
        return self._decide(
            FailureKind.OUT_OF_BOUNDS,
            f"{self._part(label)} left the bounds at t={t:.2f} s (centre of mass at {_fmt(p)} mm).",
            t,
            (label,),
        )

    def _forbid_touch(
        self, m: mujoco.MjModel, d: mujoco.MjData, a: _Pose, b: _Pose, z: Zone
    ) -> tuple[str, float, bool] | None:
        """The first watched part touching zone `z` in state `b` or on the way there from `a`:
        its label, the time, and whether it was on the way. Only geoms whose path may have
        come within their bounding radius of the zone are looked at: a path no longer than
        PATH_SAFETY × speed × dt (and its chord) lies in the ball on its chord's midpoint with
        half that length for radius."""
        if not self.watched_geoms.size:
            return None
        lo, hi = self._zone_box[z.name]
        dt = b.time - a.time
        length = np.maximum(np.linalg.norm(b.xpos - a.xpos, axis=1), PATH_SAFETY * dt * b.gspeed)
        near = _balls_meet_box(0.5 * (a.xpos + b.xpos), 0.5 * length + self._rbound, lo, hi)
        idx = np.flatnonzero(near)
        if not idx.size:
            return None
        zg = self.scene.zone_geoms[z.name]
        for i in idx:  # the state the kinematics show
            g = int(self.watched_geoms[i])
            if mujoco.mj_geomDistance(m, d, g, zg, 0.01, self._fromto) <= 0.0:
                return self._geom_owner(m, g), b.time, False
        if dt <= 0:
            return None
        # Along the path, finely enough for the thinner of the zone and each geom.
        assert self._thin is not None
        move = length[idx] + PATH_SAFETY * dt * b.spin[idx] * self._rbound[idx]
        thin = np.maximum(np.minimum(float((hi - lo).min()), self._thin[idx]), MIN_LOOK_M)
        n = int(min(MAX_SUBSTEPS, math.ceil(float((move / (0.5 * thin)).max()))))
        geoms = [int(self.watched_geoms[i]) for i in idx]
        for frac, scratch in self._along(m, a, b, n):
            for g in geoms:
                if mujoco.mj_geomDistance(m, scratch, g, zg, 0.01, self._fromto) <= 0.0:
                    return self._geom_owner(m, g), a.time + frac * dt, True
        return None

    def _overload(self, d: mujoco.MjData, dt: float, t: float) -> Decision | None:
        """An actuator at its force limit (OVERLOAD_FRACTION of it) for longer than its overload
        time, counting every
        step at the limit; a dip below it resets the count only when it lasts longer than
        OVERLOAD_DIP_S (a control pulsing just under the limit between steps once kept a
        stalled motor "within" it)."""
        if not self._actuators or dt <= 0:
            return None
        at = np.abs(d.actuator_force[self._act_ids]) >= self._act_limit
        self.overload_s = np.where(at, self.overload_s + dt, self.overload_s)
        self._below_s = np.where(at, 0.0, self._below_s + dt)
        self.overload_s[self._below_s > OVERLOAD_DIP_S] = 0.0
        for i, a in enumerate(self._actuators):
            if self.overload_s[i] > a.overload_s:
                return self._decide(
                    FailureKind.MOTOR_OVERLOAD,
                    f"Actuator {a.name!r} was held at its {a.force_limit:g} force limit for "
                    f"more than {a.overload_s:g} s (t={t:.2f} s).",
                    t,
                    (a.name,),
                )
        return None

    def _goal(self, m: mujoco.MjModel, a: _Pose, b: _Pose) -> Decision | None:
        """The hold: the target's centre of mass in a goal zone all along the step, or the
        hold starts again. (Inside at every step is not enough: a target spinning round a far
        hinge once sat in a small goal at every check and nowhere near it in between.)"""
        assert self.target is not None and a.target is not None and b.target is not None
        dist = goal_distance_mm(b.target / MM, self.goal_zones)
        self.min_distance_mm = min(self.min_distance_mm, dist)
        if dist == 0.0 and self.goal_reached_at is None:
            self.goal_reached_at = b.time
        if dist == 0.0 and self._held_between(m, a, b):
            self.hold_steps += 1  # `step` judges one step at a time
            self.best_hold_s = max(self.best_hold_s, self.hold_s)
            if self.hold_steps >= self._hold_needed:
                return self._decide(
                    None,
                    f"{self._part(self.target.label)} reached the goal and stayed "
                    f"{self.obj.goal_hold_s:g} s (t={b.time:.2f} s).",
                    b.time,
                    (self.target.label,),
                )
        else:
            self.hold_steps = 0
        return self.decision

    def _held_between(self, m: mujoco.MjModel, a: _Pose, b: _Pose) -> bool:
        """Whether the target's centre of mass stayed in one goal zone, or passed between goal
        zones, all the way from `a` to `b` (both inside)."""
        assert self.target is not None and a.target is not None and b.target is not None
        if goal_distance_mm(a.target / MM, self.goal_zones) > 0.0:
            return False
        dt = b.time - a.time
        length = max(
            float(np.linalg.norm(b.target - a.target)),
            PATH_SAFETY * dt * float(b.com_speed[self._target_index]),
        )
        mid = 0.5 * (a.target + b.target)
        for z in self.goal_zones:
            lo, hi = self._zone_box[z.name]
            if bool(np.all(mid - 0.5 * length >= lo) and np.all(mid + 0.5 * length <= hi)):
                return True  # the whole path lies in this zone
        thin = max(min(float((self._zone_box[z.name][1] - self._zone_box[z.name][0]).min())
                       for z in self.goal_zones), MIN_LOOK_M)  # fmt: skip
        n = int(min(MAX_SUBSTEPS, math.ceil(length / (0.25 * thin))))
        body = self.target.body_id
        return all(
            goal_distance_mm(scratch.xipos[body] / MM, self.goal_zones) == 0.0
            for _, scratch in self._along(m, a, b, n)
        )

    @property
    def _target_index(self) -> int:
        assert self.target is not None
        return [b for _, b in self.movable_bodies].index(self.target.body_id)

    def _along(
        self, m: mujoco.MjModel, a: _Pose, b: _Pose, n: int
    ) -> Iterator[tuple[float, mujoco.MjData]]:
        """The states strictly between `a` and `b`, `n` − 1 of them evenly spaced in time: `a`
        moved by `b`'s velocities over that fraction of the step (how MuJoCo moved it), with
        their kinematics."""
        if self._scratch is None:
            self._scratch = mujoco.MjData(m)
        scratch = self._scratch
        dt = b.time - a.time
        for k in range(1, n):
            frac = k / n
            scratch.qpos[:] = a.qpos
            mujoco.mj_integratePos(m, scratch.qpos, b.qvel, frac * dt)
            mujoco.mj_kinematics(m, scratch)
            yield frac, scratch

    # --- helpers ------------------------------------------------------------------------------

    def _touching(self, m: mujoco.MjModel, d: mujoco.MjData, z: Zone) -> str | None:
        """Label of a watched part whose geometry overlaps the zone, else None."""
        if not self.watched_geoms.size:
            return None
        zg = self.scene.zone_geoms[z.name]
        lo, hi = np.array(z.min) * MM, np.array(z.max) * MM
        pos = d.geom_xpos[self.watched_geoms]
        r = m.geom_rbound[self.watched_geoms][:, None]
        near = np.all((pos + r >= lo) & (pos - r <= hi), axis=1)
        for g in self.watched_geoms[near]:
            if mujoco.mj_geomDistance(m, d, int(g), zg, 0.01, self._fromto) <= 0.0:
                return self._geom_owner(m, int(g))
        return None

    def _geom_owner(self, m: mujoco.MjModel, g: int) -> str:
        return self._geom_label.get(g) or f"geom {g}"

    def _part(self, label: str, *, lower: bool = False) -> str:
        """A part as the reasons name it: the design's parts are "Part 'x'", the task's are
        "Environment part 'x'" (design labels never shadow them: validate_geometry)."""
        word = "Part" if self._source.get(label) == "design" else "Environment part"
        return f"{word.lower() if lower else word} {label!r}"

    def _joint_part(self, m: mujoco.MjModel, j: int) -> str:
        return self._body_label.get(int(m.jnt_bodyid[j])) or f"joint {j}"


def _inside_all(v: np.ndarray, z: Zone) -> bool:
    tol = BUILD_ZONE_TOLERANCE_MM
    return bool(np.all(v >= np.array(z.min) - tol) and np.all(v <= np.array(z.max) + tol))


def goal_distance_mm(p: np.ndarray, zones: list[Zone]) -> float:
    """Distance (mm) from the point `p` (mm) to the nearest of `zones`; 0 inside one."""
    return min(_box_distance(p, z) for z in zones)


def _box_distance(p: np.ndarray, z: Zone) -> float:
    lo, hi = np.array(z.min), np.array(z.max)
    return float(np.linalg.norm(np.maximum(0.0, np.maximum(lo - p, p - hi))))


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{c:.0f}" for c in p) + ")"


PATH_SAFETY = 2.0
"""How much longer than speed × step a path is taken to be: a point's speed along a step
changes with the pose (a chain of joints), never by this much in a 2 ms step."""
MIN_LOOK_M = 1e-4
"""The finest spacing between looks along a path (0.1 mm)."""
MAX_SUBSTEPS = 1000
"""Most states looked at between two steps (a part at 200 m/s, the instability bound, moves
0.4 m per 2 ms step: 800 looks at 0.5 mm)."""
OVERLOAD_FRACTION = 0.99
"""An actuator at this share of its force limit or more is at the limit: a control that held a
stalled motor at 0.99999 of it once never overloaded."""
OVERLOAD_DIP_S = 0.01
"""A dip below the force limit shorter than this does not restart an overload's count."""


@dataclass(frozen=True)
class _Pose:
    """A state the rules look at: its time, positions and the velocities that brought it there,
    the watched geoms' centres, speeds and spins, the movable parts' centre-of-mass speeds and
    spins, the target's centre of mass (m and m/s throughout)."""

    time: float
    qpos: np.ndarray
    qvel: np.ndarray
    xpos: np.ndarray
    gspeed: np.ndarray
    spin: np.ndarray
    com_speed: np.ndarray
    body_spin: np.ndarray
    target: np.ndarray | None


def point_velocity(d: mujoco.MjData, bodies: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The linear velocity of each point (world, m) moving with its body: MuJoCo's cvel is a
    spatial velocity (angular; linear) at the centre of mass of the body's kinematic tree."""
    cvel = d.cvel[bodies]
    root = d.subtree_com[d.model.body_rootid[bodies]] if bodies.size else np.zeros((0, 3))
    w, r = cvel[:, :3], points - root
    v: np.ndarray = cvel[:, 3:] + w[:, _I1] * r[:, _I2] - w[:, _I2] * r[:, _I1]  # + ω × r
    return v


_I1, _I2 = [1, 2, 0], [2, 0, 1]
"""(a × b)_i = a_{i+1} b_{i+2} − a_{i+2} b_{i+1}: numpy's cross costs ten times as much on a few
rows."""


def _balls_meet_box(
    centres: np.ndarray, radii: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """For each ball: whether it meets the box lo..hi."""
    gap = np.maximum(0.0, np.maximum(lo - centres, centres - hi))
    meets: np.ndarray = (gap * gap).sum(axis=1) <= radii * radii
    return meets

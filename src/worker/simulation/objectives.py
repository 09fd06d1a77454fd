"""Verdict rules (DESIGN.md §4). Pure reading of MjData; never steps the simulation.

The first decisive event wins and is latched: a failure (forbid zone touched, a part out of
bounds, divergence, a motor held at its force limit too long) or a success (the target's centre of
mass held inside a goal zone for `goal_hold_s`). `stop_on_decision` only ends the run at that
moment; it never changes the verdict. Most rules are checked every `check_every_s` of simulated
time (`update`); where a part may be (forbid zones, bounds) after every physics step, along the
path the step moved it (`step`), so that a fast part cannot pass a thin zone between two checks.

Besides the latched Decision, the Verdict keeps a short log of every rule that fired (`events`,
the first time each rule fired for each part), including those after the decision, which did
not count: what the report shows as "the rules that fired and when".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from common.models.simulation import FailureKind, Objectives, Zone
from worker.errors import Failure
from worker.simulation.builder import MM, Scene

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


class Verdict:
    """Tracks one run. Call `initial` after mj_forward at t=0, `update` after each chunk, and
    `final` at the end; all return the latched Decision once there is one."""

    def __init__(self, scene: Scene, objectives: Objectives) -> None:
        self.scene = scene
        self.obj = objectives
        self.decision: Decision | None = None
        self.goal_zones = [z for z in objectives.zones if z.kind == "goal"]
        self.forbid_zones = [z for z in objectives.zones if z.kind == "forbid"]
        self.build_zones = [z for z in objectives.zones if z.kind == "build"]
        self.target = scene.parts[objectives.target] if objectives.target else None
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
        self.hold_s = 0.0
        self.best_hold_s = 0.0
        self.goal_reached_at: float | None = None
        self.min_distance_mm = math.inf
        self.overload_s = {name: 0.0 for name in scene.actuators}
        self._fromto = np.zeros(6)
        self._body_ids = np.array([b for _, b in self.movable_bodies], dtype=np.int64)
        self._last_com: np.ndarray | None = None
        self.max_speed_m_s = np.zeros(len(self.movable_bodies))
        self.speeds_m_s = np.zeros(len(self.movable_bodies))
        """Each movable part's speed at the last check (for the plots)."""
        self.events: list[Event] = []
        self._fired: set[tuple[str, tuple[str, ...]]] = set()
        # Where a part may be is checked after every step (`step`), along the path the step
        # moved it, when there is a forbid zone or bounds: at one check every 10 ms, a part
        # dropped from 1.2 m went through a 1 mm forbid zone unseen.
        self.per_step = bool(self.forbid_zones) or objectives.bounds is not None
        self._zone_box = {
            z.name: (np.array(z.min) * MM, np.array(z.max) * MM) for z in self.forbid_zones
        }
        self._prev: _StepState | None = None
        g = self.watched_geoms
        m = scene.model
        # How far from its centre a watched geom reaches during a step: its bounding sphere,
        # plus twice its offset from its body's centre of mass (which the body turns about).
        self._reach = m.geom_rbound[g] + 2 * np.linalg.norm(m.geom_pos[g], axis=1)
        bounds = objectives.bounds
        self._bounds_lo = np.array(bounds.min) if bounds is not None else np.zeros(3)
        self._bounds_hi = np.array(bounds.max) if bounds is not None else np.zeros(3)
        self._last_q: tuple[float, np.ndarray] | None = None
        """The time and positions of the state before the last step: the state that the
        kinematics (geom_xpos, xipos) show after `mj_step`, which computes them before it
        integrates."""
        self._scratch: mujoco.MjData | None = None
        self._checked_time = -1.0

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
        self._last_q = (float(d.time), d.qpos.copy())
        self._prev = self._state(d)
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

    def update(
        self, m: mujoco.MjModel, d: mujoco.MjData, dt: float, contact_force_n: float = 0.0
    ) -> Decision | None:
        """Check every rule once; `dt` is the simulated time since the previous call and
        `contact_force_n` the largest contact normal force now."""
        t = float(d.time)
        blow_up = self._blow_up(m, d, dt, contact_force_n, t)
        if blow_up is not None:
            why, culprits = blow_up
            return self._decide(FailureKind.PHYSICS_INSTABILITY, why, t, culprits)
        if float(d.time) != self._checked_time:  # `step` has not seen this state
            placed = self._placement(m, d)
            if placed is not None:
                return placed
        for name, a in self.scene.actuators.items():
            f = abs(float(d.actuator_force[a.actuator_id]))
            if f >= a.force_limit * (1 - 1e-6):
                self.overload_s[name] += dt
                if self.overload_s[name] > a.overload_s:
                    return self._decide(
                        FailureKind.MOTOR_OVERLOAD,
                        f"Actuator {name!r} was held at its {a.force_limit:g} force limit for "
                        f"more than {a.overload_s:g} s (t={t:.2f} s).",
                        t,
                        (name,),
                    )
            else:
                self.overload_s[name] = 0.0
        if self.target is not None:
            p = d.xipos[self.target.body_id] / MM
            dist = goal_distance_mm(p, self.goal_zones)
            self.min_distance_mm = min(self.min_distance_mm, dist)
            if dist == 0.0:
                self.hold_s += dt
                self.best_hold_s = max(self.best_hold_s, self.hold_s)
                if self.goal_reached_at is None:
                    self.goal_reached_at = t
                if self.hold_s >= self.obj.goal_hold_s - 1e-9:
                    return self._decide(
                        None,
                        f"{self._part(self.target.label)} reached the goal and stayed "
                        f"{self.obj.goal_hold_s:g} s (t={t:.2f} s).",
                        t,
                        (self.target.label,),
                    )
            else:
                self.hold_s = 0.0
        return self.decision

    def step(self, m: mujoco.MjModel, d: mujoco.MjData) -> Decision | None:
        """Bounds and forbid zones after one physics step, along the path the step moved each
        part (the loop calls it after every step when `per_step`). A step moves each body at
        a constant velocity (MuJoCo integrates positions with the step's new velocities), so
        the states between two steps are those of `mj_integratePos` over a fraction of it: a
        part whose bounding sphere may have met a zone on the way is looked at along that
        path, finely enough to see it touch a zone or a part as thin as either's thinnest
        side."""
        now = float(d.time)
        if self._last_q is None:  # not started by `initial`: nothing to compare with
            self._last_q = (now, d.qpos.copy())
        state = self._state(d)
        self._last_q = (now, d.qpos.copy())
        prev = self._prev or state
        self._prev = state
        self._checked_time = now
        if not np.isfinite(state.xpos).all():
            return None  # `update` fails the run on it
        out = self._out_of_bounds(d)
        if out is not None or not self.forbid_zones or not self.watched_geoms.size:
            return out
        # Where each geom's centre can have been during the step, grown by its reach.
        reach = self._reach[:, None]
        seg_lo = np.minimum(prev.xpos, state.xpos) - reach
        seg_hi = np.maximum(prev.xpos, state.xpos) + reach
        for z in self.forbid_zones:
            lo, hi = self._zone_box[z.name]
            near = np.flatnonzero(np.all((seg_hi >= lo) & (seg_lo <= hi), axis=1))
            if not near.size:
                continue
            zg = self.scene.zone_geoms[z.name]
            for i in near:  # the state the kinematics show now
                g = int(self.watched_geoms[i])
                if mujoco.mj_geomDistance(m, d, g, zg, 0.01, self._fromto) <= 0.0:
                    hit = self._geom_owner(m, g)
                    return self._decide(
                        FailureKind.FORBID_ZONE_HIT,
                        f"{self._part(hit)} touched the forbidden zone {z.name!r} at "
                        f"t={now:.2f} s.",
                        now,
                        (hit,),
                    )
            crossed = self._crossed(m, prev, state, z, near)
            if crossed is not None:
                hit, t = crossed
                return self._decide(
                    FailureKind.FORBID_ZONE_HIT,
                    f"{self._part(hit)} touched the forbidden zone {z.name!r} at t={t:.3f} s "
                    "(passing through it within one step).",
                    t,
                    (hit,),
                )
        return None

    def _placement(self, m: mujoco.MjModel, d: mujoco.MjData) -> Decision | None:
        """Bounds and forbid zones in the current state (when the loop does not call `step`)."""
        t = float(d.time)
        out = self._out_of_bounds(d)
        if out is not None:
            return out
        for z in self.forbid_zones:
            hit = self._touching(m, d, z)
            if hit is not None:
                return self._decide(
                    FailureKind.FORBID_ZONE_HIT,
                    f"{self._part(hit)} touched the forbidden zone {z.name!r} at t={t:.2f} s.",
                    t,
                    (hit,),
                )
        return None

    def _out_of_bounds(self, d: mujoco.MjData) -> Decision | None:
        if self.obj.bounds is None or not self._body_ids.size:
            return None
        com = d.xipos[self._body_ids] / MM
        out = np.flatnonzero(~np.all((com >= self._bounds_lo) & (com <= self._bounds_hi), axis=1))
        if not out.size:
            return None
        t = float(d.time)
        label, p = self.movable_bodies[int(out[0])][0], com[int(out[0])]
        return self._decide(
            FailureKind.OUT_OF_BOUNDS,
            f"{self._part(label)} left the bounds at t={t:.2f} s (centre of mass at {_fmt(p)} mm).",
            t,
            (label,),
        )

    def _state(self, d: mujoco.MjData) -> _StepState:
        """The state the kinematics show (see `_last_q`)."""
        assert self._last_q is not None
        g = self.watched_geoms
        t, q = self._last_q
        return _StepState(t, q, d.geom_xpos[g], d.geom_xmat[g])  # fancy indexing copies

    def _crossed(
        self, m: mujoco.MjModel, a: _StepState, b: _StepState, z: Zone, near: np.ndarray
    ) -> tuple[str, float] | None:
        """The first of the `near` watched geoms that touched zone `z` between states `a` and
        `b`, as its part's label and the time; None if none did."""
        if a is b:
            return None
        if self._scratch is None:
            self._scratch = mujoco.MjData(m)
        scratch = self._scratch
        g = self.watched_geoms[near]
        lo, hi = self._zone_box[z.name]
        # How far any point of each geom moves in the step (‖ΔR‖_F bounds the turn of any
        # offset), and so how many states to look at: half the thinner of the zone and the
        # geom per look.
        turn = np.linalg.norm(b.xmat[near] - a.xmat[near], axis=1) * self._reach[near]
        move = np.linalg.norm(b.xpos[near] - a.xpos[near], axis=1) + turn
        thin = np.maximum(
            np.minimum(float((hi - lo).min()), 2 * m.geom_aabb[g, 3:].min(axis=1)), 1e-4
        )
        n = int(min(MAX_SUBSTEPS, max(1, math.ceil(float((move / (0.5 * thin)).max())))))
        if n == 1:
            return None
        dq = np.zeros(m.nv)
        mujoco.mj_differentiatePos(m, dq, 1.0, a.qpos, b.qpos)
        zg = self.scene.zone_geoms[z.name]
        for k in range(1, n):
            frac = k / n
            scratch.qpos[:] = a.qpos
            mujoco.mj_integratePos(m, scratch.qpos, dq, frac)
            mujoco.mj_kinematics(m, scratch)
            for gi in g:
                if mujoco.mj_geomDistance(m, scratch, int(gi), zg, 0.01, self._fromto) <= 0.0:
                    return self._geom_owner(m, int(gi)), a.time + frac * (b.time - a.time)
        return None

    def final(self, d: mujoco.MjData) -> Decision:
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

    # --- helpers ------------------------------------------------------------------------------

    def _blow_up(
        self, m: mujoco.MjModel, d: mujoco.MjData, dt: float, contact_force_n: float, t: float
    ) -> tuple[str, tuple[str, ...]] | None:
        """Why the state has left physics (one sentence) and the parts to blame, or None: a
        MuJoCo warning (any of them), NaN, a part's centre of mass, a body's spin or a joint
        beyond the documented bounds, or a contact force beyond MAX_CONTACT_FORCE_N."""
        counts = d.warning.number
        fired = [w for w in WARNING_MEANING if counts[w] > 0]
        if fired:
            names = ", ".join(mujoco.mjtWarning(w).name for w in fired)
            arena = [w for w in fired if w in ARENA_WARNINGS]
            if arena:
                why = WARNING_MEANING[arena[0]]
                return f"The simulation is invalid at t={t:.2f} s: {why} ({names}).", ()
            return f"The simulation diverged at t={t:.2f} s ({names}).", ()
        if not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()):
            return f"The simulation diverged at t={t:.2f} s (NaN in the state).", ()
        speeds = self._speeds(d, dt)
        if speeds.size and speeds.max() > MAX_SPEED_M_S:
            label = self.movable_bodies[int(speeds.argmax())][0]
            return (
                f"{self._part(label)} reached {speeds.max():.0f} m/s at t={t:.2f} s; "
                "the simulation exploded."
            ), (label,)
        if self._body_ids.size:
            spin = np.linalg.norm(d.cvel[self._body_ids, :3], axis=1)
            if spin.max() > MAX_ANGULAR_SPEED_RAD_S:
                label = self.movable_bodies[int(spin.argmax())][0]
                return (
                    f"{self._part(label)} spun at {spin.max():.0f} rad/s at t={t:.2f} s (bound "
                    f"{MAX_ANGULAR_SPEED_RAD_S:.0f} rad/s); the simulation exploded."
                ), (label,)
        for j in range(m.njnt):
            jt = m.jnt_type[j]
            if jt not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                continue
            v = abs(float(d.qvel[m.jnt_dofadr[j]]))
            hinge = jt == mujoco.mjtJoint.mjJNT_HINGE
            bound = MAX_ANGULAR_SPEED_RAD_S if hinge else MAX_SPEED_M_S
            if v > bound:
                name = self._joint_part(m, j)
                unit = "rad/s" if hinge else "m/s"
                return (
                    f"The joint of {self._part(name, lower=True)} moved at {v:.0f} {unit} at "
                    f"t={t:.2f} s (bound {bound:.0f} {unit}); the simulation exploded."
                ), (name,)
        if contact_force_n > MAX_CONTACT_FORCE_N:
            return (
                f"A contact force reached {contact_force_n:.3g} N at t={t:.2f} s (bound "
                f"{MAX_CONTACT_FORCE_N:.0e} N): parts are jammed into each other and the solver "
                "diverged."
            ), ()
        return None

    def _speeds(self, d: mujoco.MjData, dt: float) -> np.ndarray:
        """Mean speed (m/s) of each movable part's centre of mass since the previous check."""
        com = d.xipos[self._body_ids].copy()
        if self._last_com is None or dt <= 0:
            speeds = np.zeros(len(com))
        else:
            delta = com - self._last_com
            speeds = np.sqrt((delta * delta).sum(axis=1)) / dt
        self._last_com = com
        self.max_speed_m_s = np.maximum(self.max_speed_m_s, speeds)
        self.speeds_m_s = speeds
        return speeds

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


MAX_SUBSTEPS = 1000
"""Most states looked at between two steps for one zone (a part at 200 m/s, the instability
bound, moves 0.4 m per 2 ms step: 800 looks at 0.5 mm)."""


@dataclass(frozen=True)
class _StepState:
    """What `step` keeps of the previous state: its time, positions, and the watched geoms'
    centres and orientations."""

    time: float
    qpos: np.ndarray
    xpos: np.ndarray
    xmat: np.ndarray

"""Verdict rules (DESIGN.md §4). Pure reading of MjData; never steps the simulation.

The first decisive event wins and is latched: a failure (forbid zone touched, a part out of
bounds, divergence, a motor held at its force limit too long) or a success (the target's centre of
mass held inside a goal zone for `goal_hold_s`). `stop_on_decision` only ends the run at that
moment; it never changes the verdict. Checks run every `check_every_s` of simulated time, so an
event shorter than that (a fast part clipping a zone corner) can be missed; see the README.

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
        """Build zone and start-up interpenetration, at t = 0."""
        if self.build_zones:
            for label, verts in self.scene.solid_mm.items():
                if self.scene.parts[label].source != "design":
                    continue
                allv = np.concatenate(verts)
                if not any(_inside_all(allv, z) for z in self.build_zones):
                    names = ", ".join(z.name for z in self.build_zones)
                    return self._decide(
                        FailureKind.BUILD_ZONE_VIOLATION,
                        f"Part {label!r} is not entirely inside the build zone ({names}) at t=0.",
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
                        f"Part {part!r} starts {-low:.1f} mm below the floor, z = 0 (build123d "
                        "centres parts on the origin: lift it, e.g. with Pos(0, 0, z)).",
                        0.0,
                        (part,),
                    )
                return self._decide(
                    FailureKind.INITIAL_PENETRATION,
                    f"Parts {a!r} and {b!r} overlap by {-c.dist / MM:.1f} mm at t=0.",
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
        if self.obj.bounds is not None:
            for label, bid in self.movable_bodies:
                p = d.xipos[bid] / MM
                if not self.obj.bounds.contains(p):
                    return self._decide(
                        FailureKind.OUT_OF_BOUNDS,
                        f"Part {label!r} left the bounds at t={t:.2f} s "
                        f"(centre of mass at {_fmt(p)} mm).",
                        t,
                        (label,),
                    )
        for z in self.forbid_zones:
            hit = self._touching(m, d, z)
            if hit is not None:
                return self._decide(
                    FailureKind.FORBID_ZONE_HIT,
                    f"Part {hit!r} touched the forbidden zone {z.name!r} at t={t:.2f} s.",
                    t,
                    (hit,),
                )
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
                        f"Part {self.target.label!r} reached the goal and stayed "
                        f"{self.obj.goal_hold_s:g} s (t={t:.2f} s).",
                        t,
                        (self.target.label,),
                    )
            else:
                self.hold_s = 0.0
        return self.decision

    def final(self, d: mujoco.MjData) -> Decision:
        if self.decision is not None:
            return self.decision
        t = float(d.time)
        if self.target is not None:
            return self._decide(
                FailureKind.GOAL_NOT_REACHED,
                f"Part {self.target.label!r} did not stay in the goal for "
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
                f"Part {label!r} reached {speeds.max():.0f} m/s at t={t:.2f} s; "
                "the simulation exploded."
            ), (label,)
        if self._body_ids.size:
            spin = np.linalg.norm(d.cvel[self._body_ids, :3], axis=1)
            if spin.max() > MAX_ANGULAR_SPEED_RAD_S:
                label = self.movable_bodies[int(spin.argmax())][0]
                return (
                    f"Part {label!r} spun at {spin.max():.0f} rad/s at t={t:.2f} s (bound "
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
                    f"The joint of part {name!r} moved at {v:.0f} {unit} at t={t:.2f} s (bound "
                    f"{bound:.0f} {unit}); the simulation exploded."
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

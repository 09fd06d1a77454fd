"""Clearance: a proof that no rule can fire over a stretch of steps, so the Verdict need not look.

`Verdict.step` judges every step along its path, which costs several physics steps. Over a
stretch of steps (one check interval) the loop may skip it when this module proves, from bounds
on how far anything moved, that no rule could have fired; any stretch it cannot prove clear is
stepped again from the state saved at its start, with `Verdict.step` after every step (MuJoCo is
deterministic: the replay is bit-identical, `tests/worker/simulation/test_clearance.py`).

The proof holds only where every joint of the scene is free, every moving body a rigid body on
one (parts welded to one move with it) and no actuator is driven (a hinge 50 m from its part
once moved it 50 times what a free joint's speed bound said): a point of such a body moves in a
step by at most dt · (|v| + R·|ω|), where v and ω are the free joint's velocities after the
step (MuJoCo moves the body by them: a translation and a rotation about its origin) and R the
point's constant distance from the origin; |v| and |ω| are bounded by the sums of the largest
|qvel| components seen in the stretch. Then, from the anchor (the last state the rules were
judged in full, whose distances to the zones are measured), a stretch is clear when:

- every watched geom's bounding sphere may have moved less than its distance to every forbid
  zone (FORBID_ZONE_HIT cannot fire);
- every movable part's centre of mass less than its distance to the faces of `bounds`, and the
  target's less than its distance to the faces of the goal zone it is in, or to every goal zone
  it is outside of (OUT_OF_BOUNDS cannot fire; the hold goes on all along, or stays 0), and the
  hold would not complete within the stretch (its step is found by the replay);
- the speed and spin bounds stay under the PHYSICS_INSTABILITY bounds, no MuJoCo warning fired
  and nothing is NaN (a NaN fails every comparison, so it is never clear).

Elsewhere (hinges, slides, actuators, a part already near a zone) every step is judged in full.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from common.models.simulation import Objectives, SimOptions
from worker.simulation.builder import MM, Scene
from worker.simulation.objectives import (
    MAX_ANGULAR_SPEED_RAD_S,
    MAX_SPEED_M_S,
    WARNING_MEANING,
    Stretch,
    Verdict,
    point_velocity,
)

REANCHOR_SHARE = 0.5
"""Measure the distances again once anything may have used this share of its clearance: a new
anchor is cheaper than the replays a shrinking margin would cost."""
_WARNINGS = np.array(list(WARNING_MEANING), dtype=np.int64)


class Clearance:
    """One run's proofs. `usable` says whether the scene allows them at all."""

    def __init__(
        self, scene: Scene, objectives: Objectives, options: SimOptions, verdict: Verdict
    ) -> None:
        m = scene.model
        self.verdict = verdict
        free = int(mujoco.mjtJoint.mjJNT_FREE)
        self.usable = bool(
            m.nu == 0
            and not options.controls
            and not objectives.controls
            and (m.jnt_type == free).all()  # any other joint moves a part about a far axis
            and all(_free_rigid(m, p.body_id) for p in scene.parts.values() if p.movable)
        )
        self._obj = objectives
        self._state = np.zeros(mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_INTEGRATION))
        self._warnings = np.zeros(int(mujoco.mjtWarning.mjNWARNING), dtype=np.int64)
        self._hi = np.zeros(m.nv)
        self._lo = np.zeros(m.nv)
        self._geoms = verdict.watched_geoms
        self._bodies = np.array([b for _, b in verdict.movable_bodies], dtype=np.int64)
        self._target_row = (
            len(self._geoms) + [b for _, b in verdict.movable_bodies].index(verdict.target.body_id)
            if verdict.target is not None and verdict.target.movable
            else None
        )
        # Each movable part's speed at a stretch's end: a free body's from its joint's velocity.
        roots = [int(m.body_rootid[b]) for b in self._bodies]
        self._lin = np.array(
            [int(m.jnt_dofadr[m.body_jntadr[r]]) + k for r in roots for k in range(3)]
            if self.usable
            else [],
            dtype=np.int64,
        )
        self._welded = np.flatnonzero([r != b for r, b in zip(roots, self._bodies, strict=True)])
        self._rate: np.ndarray | None = None
        self._clear = np.zeros(0)
        self._moved = np.zeros(0)
        self._cap = np.zeros(0)
        self._in_goal: bool | None = None
        self._margin = np.zeros(0)
        self._pending = 0
        self._anchored_at_s = 0.0
        self._failed = False

    # --- the stretch --------------------------------------------------------------------------

    def begin(self, m: mujoco.MjModel, d: mujoco.MjData) -> None:
        """Save the state a replay would start from; forget the last stretch's velocities."""
        mujoco.mj_getState(m, d, self._state, mujoco.mjtState.mjSTATE_INTEGRATION)
        self._warnings = d.warning.number.copy()
        np.maximum(d.qvel, 0.0, out=self._hi)  # the speed the stretch starts at counts too
        np.minimum(d.qvel, 0.0, out=self._lo)
        self._failed = False

    def step(self, m: mujoco.MjModel, d: mujoco.MjData, n: int) -> bool:
        """`n` physics steps, recording the largest velocities; False if MuJoCo stopped."""
        hi, lo, qvel = self._hi, self._lo, d.qvel
        try:
            for _ in range(n):
                mujoco.mj_step(m, d)
                np.maximum(hi, qvel, out=hi)
                np.minimum(lo, qvel, out=lo)
        except mujoco.FatalError:
            self._failed = True
            return False
        return True

    def prove(self, m: mujoco.MjModel, d: mujoco.MjData, steps: int) -> Stretch | None:
        """The stretch just stepped, if no rule could have fired in it; else None (replay it)."""
        if self._rate is None:
            return None
        rate = self._rate @ np.maximum(self._hi, -self._lo)
        self._moved += rate * (steps * m.opt.timestep)
        clear = bool((self._moved < self._clear).all() and (rate <= self._cap).all())
        if not clear or (d.warning.number[_WARNINGS] > self._warnings[_WARNINGS]).any():
            return None
        held = steps + self._pending
        if self._in_goal and self.verdict.hold_completes(held):
            return None  # the hold completes in this stretch: the replay finds its step
        self._pending = 0
        speeds = np.sqrt(np.square(d.qvel[self._lin]).reshape(-1, 3).sum(axis=1))
        if self._welded.size:  # parts welded to a free one: v + ω × r, from the kinematics
            b = self._bodies[self._welded]
            speeds[self._welded] = np.linalg.norm(point_velocity(d, b, d.xipos[b]), axis=1)
        return Stretch(held, self._in_goal, self._anchored_at_s, speeds)

    def restore(self, m: mujoco.MjModel, d: mujoco.MjData) -> None:
        """Back to the state `begin` saved (the warnings' counts with it). After MuJoCo stopped,
        its arena is reset first: a FatalError leaves it full, and the replay would stop at
        once instead of where the physics does."""
        if self._failed:
            mujoco.mj_resetData(m, d)
        mujoco.mj_setState(m, d, self._state, mujoco.mjtState.mjSTATE_INTEGRATION)
        d.warning.number[:] = self._warnings

    @property
    def worn(self) -> bool:
        """Whether anything has used REANCHOR_SHARE of its clearance since the anchor."""
        return self._rate is None or bool((self._moved >= self._margin).any())

    # --- the anchor ----------------------------------------------------------------------------

    def anchor(self, m: mujoco.MjModel, d: mujoco.MjData, *, judged: bool) -> None:
        """Measure every distance again in the state `d`'s kinematics show (after mj_step, the
        one before it: the step since, by `d.qvel`, counts as moved already). `judged`: the
        Verdict judged the steps up to that state, not the one since (its hold is added by the
        next clear stretch)."""
        if not self.usable:
            return
        dt = m.opt.timestep
        self._pending = 1 if judged else 0
        self._anchored_at_s = float(d.time) - (dt if judged else 0.0)
        if self._rate is None:
            self._rate, self._cap = self._rates(m, d)
        g, b = self._geoms, self._bodies
        forbid = [_box(z.min, z.max) for z in self._obj.zones if z.kind == "forbid"]
        geom_clear = np.full(len(g), math.inf)
        for lo, hi in forbid:
            gap = _distance_to_box(d.geom_xpos[g], lo, hi) - m.geom_rbound[g]
            np.minimum(geom_clear, gap, out=geom_clear)
        com = d.xipos[b]
        body_clear = np.full(len(b), math.inf)
        if self._obj.bounds is not None:
            lo, hi = _box(self._obj.bounds.min, self._obj.bounds.max)
            np.minimum(body_clear, np.minimum(com - lo, hi - com).min(axis=1), out=body_clear)
        self._in_goal = None
        if self._target_row is not None:
            i = self._target_row - len(g)
            self._in_goal, gap = _goal_clearance(com[i], self._obj)
            body_clear[i] = min(body_clear[i], gap)
        spin = np.full(len(b), math.inf)
        self._clear = np.concatenate([geom_clear, body_clear, spin])
        self._margin = REANCHOR_SHARE * self._clear
        self._moved = self._rate @ np.abs(d.qvel) * m.opt.timestep

    def _rates(self, m: mujoco.MjModel, d: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """The matrix from |qvel| to each watched geom's, each movable part's centre of mass's
        speed bound and each movable part's spin bound, and the caps on those rates."""
        g, b = self._geoms, self._bodies
        rows = np.zeros((len(g) + 2 * len(b), m.nv))
        for i, geom in enumerate(g):
            body = int(m.geom_bodyid[geom])
            _fill(m, d, rows[i], body, d.geom_xpos[geom], float(m.geom_rbound[geom]))
        for k, body in enumerate(b):
            _fill(m, d, rows[len(g) + k], int(body), d.xipos[body], 0.0)
            root = int(m.body_rootid[body])
            if m.body_jntnum[root]:
                adr = int(m.jnt_dofadr[m.body_jntadr[root]])
                rows[len(g) + len(b) + k, adr + 3 : adr + 6] = 1.0
        cap = np.concatenate(
            [
                np.full(len(g), math.inf),
                np.full(len(b), MAX_SPEED_M_S),
                np.full(len(b), MAX_ANGULAR_SPEED_RAD_S),
            ]
        )
        return rows, cap


def _free_rigid(m: mujoco.MjModel, body: int) -> bool:
    """Whether `body` moves as part of a rigid body on a free joint: its tree's root has one
    free joint and no body of the tree has any other."""
    root = int(m.body_rootid[body])
    if root == 0 or m.body_jntnum[root] != 1:
        return False
    if int(m.jnt_type[m.body_jntadr[root]]) != mujoco.mjtJoint.mjJNT_FREE:
        return False
    tree = np.flatnonzero(m.body_rootid == root)
    return bool((m.body_jntnum[tree[tree != root]] == 0).all())


def _fill(
    m: mujoco.MjModel, d: mujoco.MjData, row: np.ndarray, body: int, point: np.ndarray, r: float
) -> None:
    """One row of the rate matrix: a point (with a ball of radius `r` round it) on `body`
    moves at most |v| + (its distance from the root's origin + r)·|ω| (rigid: constant)."""
    root = int(m.body_rootid[body])
    if not m.body_jntnum[root]:
        return  # fixed to the world (its tree's root has no joint): never moves
    assert int(m.jnt_type[m.body_jntadr[root]]) == mujoco.mjtJoint.mjJNT_FREE  # `usable`
    adr = int(m.jnt_dofadr[m.body_jntadr[root]])
    row[adr : adr + 3] = 1.0
    row[adr + 3 : adr + 6] = float(np.linalg.norm(point - d.xpos[root])) + r


def _box(lo_mm: tuple[float, float, float], hi_mm: tuple[float, float, float]) -> tuple[
    np.ndarray, np.ndarray
]:  # fmt: skip
    return np.array(lo_mm) * MM, np.array(hi_mm) * MM


def _distance_to_box(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each point's distance to the box lo..hi (0 inside)."""
    gap = np.maximum(0.0, np.maximum(lo - p, p - hi))
    out: np.ndarray = np.sqrt((gap * gap).sum(axis=1))
    return out


def _goal_clearance(p: np.ndarray, obj: Objectives) -> tuple[bool, float]:
    """Whether the point is in a goal zone, and how far it may move and stay so (in: the
    farthest it is from the faces of a zone it is in; out: its distance to the nearest)."""
    inside, outside = 0.0, math.inf
    for z in obj.zones:
        if z.kind != "goal":
            continue
        lo, hi = _box(z.min, z.max)
        inner = float(np.minimum(p - lo, hi - p).min())
        if inner > 0:
            inside = max(inside, inner)
        else:
            outside = min(outside, float(_distance_to_box(p[None], lo, hi)[0]))
    return (True, inside) if inside > 0 else (False, outside)

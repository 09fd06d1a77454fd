"""SimulationLoop: steps a built Scene, applies controls, asks the Verdict after every step
(or `Clearance` proves a stretch needs no asking), captures frames by simulated time, samples
the series the report plots and reports progress. Knows nothing of
rendering or storage: frames and the decisive moment go to callbacks. (As in dm_control, the
physics engine and the loop are separate.)

Frames stop `VIDEO_TAIL_S` of simulated time after the decision unless `full_video` is set; the
simulation itself runs on as before (only `stop_on_decision` ends it), so the verdict and the
metrics do not depend on how much video is taken.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from common.models.simulation import Control, FailureKind, Objectives, SimOptions
from worker.errors import Failed, Failure
from worker.progress import Progress, ProgressFn
from worker.simulation.builder import MM, Scene
from worker.simulation.clearance import Clearance
from worker.simulation.objectives import Decision, Verdict
from worker.simulation.series import RunSeries, Series

FrameFn = Callable[[mujoco.MjData], None]
DecisionFn = Callable[[mujoco.MjData, Decision], None]
"""`on_decision`: called once per run with the state at the moment the decision latched (at the
end for a decision only the end can make); `on_end`: once with the final state."""

VIDEO_TAIL_S = 1.0
"""Simulated seconds of video after the decision (SimOptions.full_video: the whole run)."""


def timed_out(t: float) -> Failed:
    """The wall-clock budget ran out between two chunks, at simulated time `t`."""
    return Failed(
        FailureKind.TIMEOUT, f"Timeout: the simulation ran out of wall-clock time at t={t:.2f} s."
    )


@dataclass
class RunSummary:
    run: int
    failure: Failure | None
    reason: str
    decided_at_s: float | None
    sim_time_s: float
    steps: int
    wall_time_s: float
    frames: int
    parts: dict[str, dict[str, Any]]
    goal: dict[str, Any] | None
    energy_j: dict[str, float]
    max_contact_force_n: float
    warnings: dict[str, int]
    perturbation: dict[str, Any] = field(default_factory=dict)
    culprits: tuple[str, ...] = ()
    events: list[dict[str, Any]] = field(default_factory=list)
    """The rules that fired and when (Verdict.events), the decisive one marked."""
    series: Series | None = None
    """What the report plots (not part of the metrics: it stays in the physics jail)."""

    @property
    def kind(self) -> FailureKind | None:
        return self.failure.kind if self.failure is not None else None

    def brief(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "outcome": "SUCCESS" if self.failure is None else "FAIL",
            "failure": self.failure.kind.value if self.failure else None,
            "reason": self.reason,
            "decided_at_s": self.decided_at_s,
            "culprits": list(self.culprits),
            "sim_time_s": round(self.sim_time_s, 6),
            "steps": self.steps,
            "perturbation": self.perturbation,
            "events": self.events,
        }


def control_value(c: Control, t: float) -> float:
    if c.kind == "constant":
        return c.value
    if c.kind == "sine":
        return c.offset + c.amplitude * math.sin(2 * math.pi * c.frequency_hz * t + c.phase_rad)
    return c.value if t < c.at_s else c.after


def max_normal_force(m: mujoco.MjModel, d: mujoco.MjData) -> float:
    """Largest contact normal force (N) now; the vectorised equivalent of `mj_contactForce`.

    A pyramidal-cone contact of dimension k has 2(k−1) constraint rows (1 when frictionless)
    whose forces add up to the normal force; an elliptic one keeps it in its first row."""
    n = d.ncon
    if n == 0:
        return 0.0
    elliptic = m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    if n <= 16 and not elliptic:  # numpy's per-call overhead beats the loop only for many
        f = np.zeros(6)
        best = 0.0
        for i in range(n):
            mujoco.mj_contactForce(m, d, i, f)
            best = max(best, abs(f[0]))
        return float(best)
    addr = d.contact.efc_address[:n]
    keep = addr >= 0  # contacts excluded from the solver have no rows
    if not keep.any():
        return 0.0
    addr = addr[keep]
    if elliptic:
        return float(np.abs(d.efc_force[addr]).max())
    dim = d.contact.dim[:n][keep]
    rows = np.where(dim == 1, 1, 2 * (dim - 1))
    starts = np.cumsum(rows) - rows
    idx = np.repeat(addr, rows) + (np.arange(rows.sum()) - np.repeat(starts, rows))
    return float(np.abs(np.add.reduceat(d.efc_force[idx], starts)).max())


def _owned_controls(scene: Scene, objectives: Objectives, options: SimOptions) -> list[Control]:
    """The controls of the run: the request's (SimOptions) for the design's actuators, the
    task's (Objectives) for the environment's. A request's control for the task's gate would
    open it (INVALID_GEOMETRY, as every other reach into the task's namespace)."""
    known = sorted(scene.actuators) or "none"
    for c, owner in [
        *((c, "design") for c in options.controls),
        *((c, "environment") for c in objectives.controls),
    ]:
        if c.actuator not in scene.actuators:
            raise Failed(
                FailureKind.INVALID_GEOMETRY,
                f"controls name unknown actuators [{c.actuator!r}] (known: {known})",
            )
        source = scene.parts[c.actuator].source
        if source != owner:
            by = "the request's controls" if owner == "design" else "the task's controls"
            raise Failed(
                FailureKind.INVALID_GEOMETRY,
                f"{by} name the actuator of {source} part {c.actuator!r}: SimOptions.controls "
                "drive only the design's actuators, Objectives.controls only the task's",
            )
    return [*options.controls, *objectives.controls]


class SimulationLoop:
    """One simulation run. `check_every_s` sets how often rules are checked (simulated time)."""

    def __init__(
        self,
        scene: Scene,
        objectives: Objectives,
        options: SimOptions,
        *,
        on_frame: FrameFn | None = None,
        on_decision: DecisionFn | None = None,
        on_end: DecisionFn | None = None,
        on_progress: ProgressFn | None = None,
        wall_deadline: float | None = None,
        check_every_s: float = 0.01,
        progress_every_s: float = 0.25,
    ) -> None:
        self.scene = scene
        self.obj = objectives
        self.opt = options
        self.on_frame = on_frame
        self.on_decision = on_decision
        self.on_end = on_end
        self.on_progress = on_progress
        self.wall_deadline = wall_deadline
        self.check_steps = max(1, round(check_every_s / options.timestep_s))
        self.progress_every_s = progress_every_s
        self.controls = [
            (scene.actuators[c.actuator], c) for c in _owned_controls(scene, objectives, options)
        ]

    def run(self, run_index: int = 0, rng: np.random.Generator | None = None) -> RunSummary:
        m = self.scene.model
        d = mujoco.MjData(m)
        m.opt.enableflags |= int(mujoco.mjtEnableBit.mjENBL_ENERGY)
        perturbation = self._perturb(m, d, rng) if rng is not None else {}
        verdict = Verdict(self.scene, self.obj)
        try:
            mujoco.mj_forward(m, d)  # also makes the first frame non-black
        except mujoco.FatalError as e:  # too many contacts for the arena already at t = 0
            verdict.halt(d, e)
        e0 = float(d.energy.sum())
        wall0 = time.monotonic()
        dt = m.opt.timestep
        total_steps = round(self.opt.duration_s / dt)
        series = RunSeries(self.scene, self.obj, verdict, total_steps // self.check_steps + 2)
        series.sample(d, self._max_force(m, d, verdict))
        frame_dt = 1.0 / self.opt.fps
        n_frames = round(self.opt.duration_s * self.opt.fps) if self.on_frame else 0
        announced = False
        decision = verdict.decision if verdict.halted else verdict.initial(m, d)
        clearance = Clearance(self.scene, self.obj, self.opt, verdict)
        clearance.anchor(m, d, judged=False)
        if decision is not None:
            n_frames, announced = self._announce(d, decision, n_frames), True
        frames = 0
        max_force = 0.0
        max_ke = float(d.energy[1])
        last_progress = wall0
        step = 0
        since_check = 0
        self._progress("simulate", 0.0, 0.0)
        while step < total_steps:
            # Frames are taken by simulated time: frame k shows t = k / fps.
            while frames < n_frames and d.time >= frames * frame_dt - dt / 2:
                assert self.on_frame is not None
                self.on_frame(d)
                frames += 1
            if verdict.halted or (decision is not None and self.opt.stop_on_decision):
                break
            # A chunk ends at the next check, the next frame or the end of the run.
            chunk = min(self.check_steps - since_check, total_steps - step)
            if frames < n_frames:
                to_frame = math.ceil((frames * frame_dt - dt / 2 - d.time) / dt)
                chunk = max(1, min(chunk, to_frame))
            done = self._stretch(m, d, chunk, verdict, clearance)
            step += done
            since_check += done
            placed = done < chunk  # `step` decided mid-chunk: check the rest now
            if placed or since_check >= self.check_steps or step == total_steps:
                force = self._max_force(m, d, verdict)
                decision = verdict.update(m, d, since_check * dt, force)
                since_check = 0
                max_ke = max(max_ke, float(d.energy[1]))
                max_force = max(max_force, force)
                series.sample(d, force)
                if decision is not None and not announced:
                    n_frames, announced = self._announce(d, decision, n_frames), True
                now = time.monotonic()
                if self.wall_deadline is not None and now > self.wall_deadline:
                    raise timed_out(float(d.time))
                if now - last_progress >= self.progress_every_s:
                    last_progress = now
                    self._progress("simulate", float(d.time), step / total_steps)
        while frames < n_frames and d.time >= frames * frame_dt - dt / 2:
            assert self.on_frame is not None
            self.on_frame(d)
            frames += 1
        if not verdict.halted:  # kinematics after mj_step lag one step: the final state's
            mujoco.mj_forward(m, d)
        if verdict.stale:
            verdict.resume(m, d)
        decision = verdict.final(m, d)
        if not announced:
            self._announce(d, decision, n_frames)
        if self.on_end is not None:
            self.on_end(d, decision)
        wall = time.monotonic() - wall0  # with the callbacks' time, which the caller knows
        self._progress("simulate", float(d.time), 1.0)
        return RunSummary(
            run=run_index,
            failure=decision.failure,
            reason=decision.reason,
            decided_at_s=decision.time_s if verdict.decision is not None else None,
            sim_time_s=float(d.time),
            steps=step,
            wall_time_s=wall,
            frames=frames,
            parts=self._part_metrics(d, verdict),
            goal=self._goal_metrics(verdict),
            energy_j={
                "initial": e0,
                "final": float(d.energy.sum()),
                "max_kinetic": max_ke,
            },
            max_contact_force_n=max_force,
            warnings={
                mujoco.mjtWarning(i).name: int(d.warning[i].number)
                for i in range(int(mujoco.mjtWarning.mjNWARNING))
                if d.warning[i].number
            },
            perturbation=perturbation,
            culprits=decision.culprits,
            events=[e.brief() for e in verdict.events],
            series=series.result(),
        )

    # --- helpers --------------------------------------------------------------------------------

    def _stretch(
        self, m: mujoco.MjModel, d: mujoco.MjData, n: int, verdict: Verdict, clearance: Clearance
    ) -> int:
        """Up to `n` physics steps: without the Verdict where `clearance` proves that no rule
        could fire in them, else (from the same state again) judged after every step."""
        if clearance.usable and not verdict.halted:
            clearance.begin(m, d)
            if clearance.step(m, d, n):
                stretch = clearance.prove(m, d, n)
                if stretch is not None:
                    verdict.skip(d, stretch)
                    if clearance.worn:
                        clearance.anchor(m, d, judged=False)
                    return n
            clearance.restore(m, d)
            if verdict.stale:
                verdict.resume(m, d)
        done = self._advance(m, d, n, verdict)
        clearance.anchor(m, d, judged=True)
        return done

    def _advance(self, m: mujoco.MjModel, d: mujoco.MjData, n: int, verdict: Verdict) -> int:
        """Up to `n` physics steps, one at a time: the controls change with time and every rule
        but the contact force is checked after every step (`Verdict.step`), along the path
        from the step before. Returns the steps taken: fewer when the decision latches (the
        caller checks the rest at once) or MuJoCo cannot go on (`Verdict.halt`)."""
        undecided = verdict.decision is None
        for i in range(n):
            for a, c in self.controls:
                d.ctrl[a.actuator_id] = control_value(c, d.time) * a.ctrl_scale
            try:
                mujoco.mj_step(m, d)
            except mujoco.FatalError as e:
                verdict.halt(d, e)
                return i
            if verdict.step(m, d) is not None and undecided:
                return i + 1
        return n

    @staticmethod
    def _max_force(m: mujoco.MjModel, d: mujoco.MjData, verdict: Verdict) -> float:
        """The largest contact force, unless MuJoCo stopped mid-step (its forces are unset)."""
        return 0.0 if verdict.halted else max_normal_force(m, d)

    def _announce(self, d: mujoco.MjData, decision: Decision, n_frames: int) -> int:
        """Hand the decisive moment to `on_decision`; return the frames the video keeps: those
        up to VIDEO_TAIL_S after the decision (all of them with `full_video`)."""
        if self.on_decision is not None:
            self.on_decision(d, decision)
        if self.opt.full_video:
            return n_frames
        last = math.floor((decision.time_s + VIDEO_TAIL_S) * self.opt.fps + 1e-9)
        return min(n_frames, last + 1)

    def _progress(self, phase: str, t: float, fraction: float) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(phase, t, min(1.0, fraction)))

    def _perturb(
        self, m: mujoco.MjModel, d: mujoco.MjData, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Shift and turn each free design part, and move each hinge and slide of the design
        within its range (jitter run): a design whose parts all hang on joints once escaped
        the jitter altogether."""
        out: dict[str, Any] = {}
        j = self.opt.jitter
        for p in self.scene.parts.values():
            if p.source != "design" or p.body_id <= 0 or not m.body_jntnum[p.body_id]:
                continue
            jid = int(m.body_jntadr[p.body_id])
            adr = int(m.jnt_qposadr[jid])
            kind = int(m.jnt_type[jid])
            if kind == mujoco.mjtJoint.mjJNT_FREE:
                out[p.label] = _perturb_free(d, adr, rng, j.position_mm, j.rotation_deg)
            elif kind in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                hinge = kind == mujoco.mjtJoint.mjJNT_HINGE
                size = math.radians(j.rotation_deg) if hinge else j.position_mm * MM
                move = float(rng.uniform(-size, size))
                if m.jnt_limited[jid]:
                    lo, hi = m.jnt_range[jid]
                    move = min(max(move, float(lo)), float(hi))
                d.qpos[adr] += move
                out[p.label] = (
                    {"rotation_deg": round(math.degrees(move), 3)}
                    if hinge
                    else {"slide_mm": round(move / MM, 3)}
                )
        return out

    def _part_metrics(self, d: mujoco.MjData, verdict: Verdict) -> dict[str, dict[str, Any]]:
        speed = dict(
            zip(
                [label for label, _ in verdict.movable_bodies],
                verdict.max_speed_m_s.tolist(),
                strict=True,
            )
        )
        out = {}
        for label, p in self.scene.parts.items():
            out[label] = {
                "source": p.source,
                "mass_kg": p.mass_kg,
                "initial_position_mm": [round(c, 3) for c in p.initial_com_mm],
                "final_position_mm": [round(float(c) / MM, 3) for c in d.xipos[p.body_id]],
                "final_quat": [round(float(c), 6) for c in d.xquat[p.body_id]],
                "max_speed_mm_s": round(speed.get(label, 0.0) / MM, 3),
            }
        return out

    def _goal_metrics(self, verdict: Verdict) -> dict[str, Any] | None:
        if verdict.target is None:
            return None
        return {
            "reached": verdict.goal_reached_at is not None,
            "reached_at_s": verdict.goal_reached_at,
            "hold_s": round(verdict.best_hold_s, 6),
            "min_distance_mm": round(verdict.min_distance_mm, 3),
        }


def _perturb_free(
    d: mujoco.MjData, adr: int, rng: np.random.Generator, position_mm: float, rotation_deg: float
) -> dict[str, Any]:
    """Shift a free part by up to `position_mm` on each axis and turn it by up to
    `rotation_deg` about a random axis."""
    shift = rng.uniform(-position_mm, position_mm, 3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis) or 1.0
    angle = math.radians(rng.uniform(-rotation_deg, rotation_deg))
    d.qpos[adr : adr + 3] += shift * MM
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, axis, angle)
    res = np.zeros(4)
    mujoco.mju_mulQuat(res, quat, d.qpos[adr + 3 : adr + 7])
    d.qpos[adr + 3 : adr + 7] = res
    return {
        "shift_mm": [round(float(c), 3) for c in shift],
        "rotation_deg": round(math.degrees(angle), 3),
    }

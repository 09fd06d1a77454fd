"""SimulationLoop: steps a built Scene, applies controls, asks the Verdict, captures frames by
simulated time, samples the series the report plots and reports progress. Knows nothing of
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
    if n <= 16:  # numpy's per-call overhead beats the Python loop only for many contacts
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
    if m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC:
        return float(np.abs(d.efc_force[addr]).max())
    dim = d.contact.dim[:n][keep]
    rows = np.where(dim == 1, 1, 2 * (dim - 1))
    starts = np.cumsum(rows) - rows
    idx = np.repeat(addr, rows) + (np.arange(rows.sum()) - np.repeat(starts, rows))
    return float(np.abs(np.add.reduceat(d.efc_force[idx], starts)).max())


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
        unknown = [c.actuator for c in options.controls if c.actuator not in scene.actuators]
        if unknown:
            known = sorted(scene.actuators) or "none"
            raise Failed(
                FailureKind.INVALID_GEOMETRY,
                f"controls name unknown actuators {unknown} (known: {known})",
            )
        self.controls = [(scene.actuators[c.actuator], c) for c in options.controls]

    def run(self, run_index: int = 0, rng: np.random.Generator | None = None) -> RunSummary:
        m = self.scene.model
        d = mujoco.MjData(m)
        m.opt.enableflags |= int(mujoco.mjtEnableBit.mjENBL_ENERGY)
        perturbation = self._perturb(m, d, rng) if rng is not None else {}
        mujoco.mj_forward(m, d)  # also makes the first frame non-black
        verdict = Verdict(self.scene, self.obj)
        e0 = float(d.energy.sum())
        wall0 = time.monotonic()
        dt = m.opt.timestep
        total_steps = round(self.opt.duration_s / dt)
        series = RunSeries(self.scene, self.obj, verdict, total_steps // self.check_steps + 2)
        series.sample(d, max_normal_force(m, d))
        frame_dt = 1.0 / self.opt.fps
        n_frames = round(self.opt.duration_s * self.opt.fps) if self.on_frame else 0
        announced = False
        decision: Decision | None = verdict.initial(m, d)
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
            if decision is not None and self.opt.stop_on_decision:
                break
            # A chunk ends at the next check, the next frame or the end of the run.
            chunk = min(self.check_steps - since_check, total_steps - step)
            if frames < n_frames:
                to_frame = math.ceil((frames * frame_dt - dt / 2 - d.time) / dt)
                chunk = max(1, min(chunk, to_frame))
            if self.controls:
                for _ in range(chunk):  # controls change with time: set them every step
                    for a, c in self.controls:
                        d.ctrl[a.actuator_id] = control_value(c, d.time) * a.ctrl_scale
                    mujoco.mj_step(m, d)
            else:
                mujoco.mj_step(m, d, chunk)
            step += chunk
            since_check += chunk
            if since_check >= self.check_steps or step == total_steps:
                force = max_normal_force(m, d)
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
        mujoco.mj_forward(m, d)  # kinematics after mj_step lag one step; report the final state
        decision = verdict.final(d)
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
        """Shift and turn each free design part (jitter run)."""
        out: dict[str, Any] = {}
        j = self.opt.jitter
        for p in self.scene.parts.values():
            if not (p.free and p.source == "design"):
                continue
            jid = m.body_jntadr[p.body_id]
            adr = m.jnt_qposadr[jid]
            shift = rng.uniform(-j.position_mm, j.position_mm, 3)
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis) or 1.0
            angle = math.radians(rng.uniform(-j.rotation_deg, j.rotation_deg))
            d.qpos[adr : adr + 3] += shift * MM
            quat = np.zeros(4)
            mujoco.mju_axisAngle2Quat(quat, axis, angle)
            res = np.zeros(4)
            mujoco.mju_mulQuat(res, quat, d.qpos[adr + 3 : adr + 7])
            d.qpos[adr + 3 : adr + 7] = res
            out[p.label] = {
                "shift_mm": [round(float(c), 3) for c in shift],
                "rotation_deg": round(math.degrees(angle), 3),
            }
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

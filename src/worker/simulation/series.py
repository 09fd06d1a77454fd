"""What decided a run, over simulated time: sampled at each verdict check, decimated to a bounded
number of points, for the report's plots (`plots.py`).

A sample costs a few microseconds (the verdict already computed the speeds, the loop the contact
force); a run keeps at most `MAX_POINTS` rows however long it is. Decimation keeps each bucket's
largest value for peaks (speeds, contact force, actuator effort) and its last value for levels
(distance, hold time, energy), so a 10 ms force spike survives a 60 s run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np
from numpy.typing import NDArray

from common.models.simulation import Objectives
from worker.simulation.builder import MM, Scene
from worker.simulation.objectives import Verdict

MAX_POINTS = 600
"""Rows kept per run, whatever its length (a 10 s run at 10 ms checks has 1000 samples)."""
MAX_LINES = 8
"""Lines per plot (part speeds, actuator efforts): the fastest parts, the most loaded actuators."""


@dataclass(frozen=True)
class Column:
    group: str
    """The plot it belongs to: goal, hold, speed, force, energy, effort."""
    name: str
    """Its line's label (a part's or an actuator's label, or a quantity)."""
    reduce: Literal["last", "max"]


@dataclass(frozen=True)
class Series:
    """Decimated samples of one run: `values[i, j]` is column j at time `t[i]`."""

    columns: tuple[Column, ...]
    t: NDArray[np.float64]
    values: NDArray[np.float64]
    goal_hold_s: float | None
    """The hold the target needs (the hold plot's threshold); None without a target."""

    def group(self, name: str) -> list[tuple[Column, NDArray[np.float64]]]:
        return [(c, self.values[:, j]) for j, c in enumerate(self.columns) if c.group == name]


class Decimator:
    """Rows of `len(columns)` values in, at most `max_points` + 2 rows kept: the first row as it
    is (the start of every plot), then every `stride` rows become one (max or last per column),
    so memory is fixed before the run starts."""

    def __init__(self, columns: tuple[Column, ...], expected_rows: int, max_points: int) -> None:
        self.columns = columns
        self.stride = max(1, math.ceil(expected_rows / max_points))
        self._t = np.empty(max_points + 2)  # +2: the first row and the partial last bucket
        self._rows = np.empty((max_points + 2, len(columns)))
        self._is_max = np.array([c.reduce == "max" for c in columns], dtype=bool)
        self._acc = np.full(len(columns), -np.inf)
        self._in_bucket = 0
        self._last_t = 0.0
        self._last = np.zeros(len(columns))
        self.n = 0

    def add(self, t: float, row: NDArray[np.float64]) -> None:
        """Take `row` (copied: the caller may reuse it)."""
        np.fmax(self._acc, row, out=self._acc)  # fmax: a NaN sample does not erase the peak
        self._last[:] = row
        self._last_t = t
        self._in_bucket += 1
        if self.n == 0 or self._in_bucket >= self.stride:
            self._flush()

    def _flush(self) -> None:
        if self._in_bucket == 0 or self.n >= len(self._t):
            return
        self._t[self.n] = self._last_t
        np.copyto(self._rows[self.n], self._last)
        np.copyto(self._rows[self.n], self._acc, where=self._is_max)
        self.n += 1
        self._acc.fill(-np.inf)
        self._in_bucket = 0

    def rows(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        self._flush()
        return self._t[: self.n].copy(), self._rows[: self.n].copy()


class RunSeries:
    """Samples one run at each check: the target's distance to the goal and its hold, each
    movable part's speed, the largest contact force, energy, each actuator's effort (% of its
    force limit)."""

    def __init__(
        self, scene: Scene, objectives: Objectives, verdict: Verdict, expected_samples: int
    ) -> None:
        self.verdict = verdict
        self.objectives = objectives
        cols: list[Column] = []
        self._target = verdict.target
        if self._target is not None:
            cols += [
                Column("goal", "distance to goal", "last"),
                Column("hold", "hold in goal", "last"),
            ]
        cols += [Column("speed", label, "max") for label, _ in verdict.movable_bodies]
        cols.append(Column("force", "largest contact force", "max"))
        cols += [
            Column("energy", "kinetic", "last"),
            Column("energy", "potential", "last"),
            Column("energy", "total", "last"),
        ]
        acts = list(scene.actuators.values())
        cols += [Column("effort", a.name, "max") for a in acts]
        self._act_ids = np.array([a.actuator_id for a in acts], dtype=np.int64)
        self._act_limits = np.array([a.force_limit for a in acts], dtype=np.float64)
        self._row = np.zeros(len(cols))
        self._n_speed = len(verdict.movable_bodies)
        self._goals = [
            tuple(c * MM for c in (*z.min, *z.max)) for z in verdict.goal_zones
        ]  # (x0, y0, z0, x1, y1, z1) in metres: plain floats beat numpy on 3-vectors
        self._dec = Decimator(tuple(cols), expected_samples, MAX_POINTS)

    def sample(self, d: mujoco.MjData, contact_force_n: float) -> None:
        row = self._row  # filled in place; the decimator copies it
        i = 0
        if self._target is not None:
            x, y, z = d.xipos[self._target.body_id].tolist()
            row[0] = min(_box_distance(x, y, z, g) for g in self._goals) / MM
            row[1] = self.verdict.hold_s
            i = 2
        np.divide(self.verdict.speeds_m_s, MM, out=row[i : i + self._n_speed])
        i += self._n_speed
        e = d.energy
        row[i : i + 4] = (contact_force_n, e[1], e[0], e[0] + e[1])
        i += 4
        if self._act_ids.size:
            row[i:] = np.abs(d.actuator_force[self._act_ids]) / self._act_limits * 100.0
        self._dec.add(float(d.time), row)

    def result(self) -> Series:
        t, values = self._dec.rows()
        return Series(
            columns=self._dec.columns,
            t=t,
            values=values,
            goal_hold_s=self.objectives.goal_hold_s if self._target is not None else None,
        )


def _box_distance(x: float, y: float, z: float, box: tuple[float, ...]) -> float:
    """objectives.goal_distance_mm for one box, on floats (metres)."""
    dx = max(box[0] - x, 0.0, x - box[3])
    dy = max(box[1] - y, 0.0, y - box[4])
    dz = max(box[2] - z, 0.0, z - box[5])
    return math.sqrt(dx * dx + dy * dy + dz * dz)

"""Friction is the same in every direction (README "Friction"): a block on a slope sticks or
slides the same whichever way the slope faces in the world, sliding follows Coulomb's
g(sin θ − μ cos θ), and a tower that statics says is stable stands still."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from worker.simulation.loop import SimulationLoop

G = 9.81
HEADINGS = (0.0, 30.0, 45.0, 90.0)


def _slope_run(
    bd: Any, scene_of: Any, *, heading: float, slope: float, mu: float, duration: float
) -> tuple[np.ndarray, np.ndarray]:
    """A 40 mm block 0.2 mm above a fixed 600 mm plank tilted by `slope`°, its downhill side
    facing `heading`° in the world. Returns the block's displacement (mm) and the downhill unit
    vector."""
    frame = bd.Pos(0, 0, 400) * bd.Rot(0, 0, heading) * bd.Rot(0, slope, 0)
    plank = frame * bd.Box(600, 200, 20)
    plank.label = "plank"
    block = frame * bd.Pos(0, 0, 10 + 20 + 0.2) * bd.Box(40, 40, 40)
    block.label = "block"
    parts = {"plank": {"fixed": True, "friction": mu}, "block": {"friction": mu}}
    scene, obj, opt = scene_of([plank, block], options={"duration_s": duration}, parts=parts)
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    b = s.parts["block"]
    moved = np.array(b["final_position_mm"]) - np.array(b["initial_position_mm"])
    h, t = math.radians(heading), math.radians(slope)
    downhill = np.array([math.cos(h) * math.cos(t), math.sin(h) * math.cos(t), -math.sin(t)])
    return moved, downhill


@pytest.mark.parametrize("heading", HEADINGS)
def test_a_block_that_should_stick_sticks_at_every_heading(
    bd: Any, scene_of: Any, heading: float
) -> None:
    """tan 24° = 0.445 < μ = 0.5: static friction holds it. With the pyramidal cone it crept
    7 mm in 2 s at 0° and slid off at 45°."""
    moved, _ = _slope_run(bd, scene_of, heading=heading, slope=24.0, mu=0.5, duration=2.0)
    assert np.linalg.norm(moved) < 1.0, moved


@pytest.mark.parametrize("heading", HEADINGS)
def test_a_block_that_should_slide_slides_as_coulomb_says_at_every_heading(
    bd: Any, scene_of: Any, heading: float
) -> None:
    """30° and μ = 0.3: a = g(sin θ − μ cos θ) = 2.36 m/s², so in 0.4 s it slides 189 mm
    (of the 280 mm to the plank's end)."""
    t, theta, mu = 0.4, math.radians(30.0), 0.3
    moved, downhill = _slope_run(bd, scene_of, heading=heading, slope=30.0, mu=mu, duration=t)
    expected = G * (math.sin(theta) - mu * math.cos(theta)) * t * t / 2 * 1000
    along = float(moved @ downhill)
    sideways = float(np.linalg.norm(moved - along * downhill))
    assert along == pytest.approx(expected, rel=0.03), (along, expected)
    assert sideways < 1.0


def test_a_statically_stable_tower_stands_still_for_10_s(bd: Any, scene_of: Any) -> None:
    """Five 40 mm cubes, each shifted 6 mm further out: every cube's combined centre of mass
    above it stays over its support, so statics says it stands. With the pyramidal cone such a
    tower drifted 14 mm in 10 s and fell by 20 s."""
    cubes = []
    for i in range(5):
        c = bd.Pos(6 * i, 0, 20 + 40 * i) * bd.Box(40, 40, 40)
        c.label = f"cube{i}"
        cubes.append(c)
    scene, obj, opt = scene_of(cubes, options={"duration_s": 10.0})
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    for i in range(5):
        p = s.parts[f"cube{i}"]
        moved = np.array(p["final_position_mm"]) - np.array(p["initial_position_mm"])
        assert np.linalg.norm(moved) < 1.0, (i, moved)

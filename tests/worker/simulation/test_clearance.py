"""Clearance: the replay it rests on is exact, it is used only where its proof holds, and a run
with it decides exactly as a run that judges every step."""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import pytest

from worker.simulation import loop as loop_module
from worker.simulation.clearance import Clearance
from worker.simulation.loop import SimulationLoop
from worker.simulation.objectives import Verdict


class _Never(Clearance):
    """A Clearance that proves nothing: every step is judged."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.usable = False


def _both(scene_of: Any, shapes: Any, **kw: Any) -> tuple[Any, Any, int]:
    """The same run with Clearance and judging every step; how many stretches were proven."""
    scene, obj, opt = scene_of(shapes, **kw)
    proven = 0
    real_prove = Clearance.prove

    def counting(self: Clearance, m: mujoco.MjModel, d: mujoco.MjData, steps: int) -> Any:
        nonlocal proven
        out = real_prove(self, m, d, steps)
        proven += out is not None
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Clearance, "prove", counting)
        fast = SimulationLoop(scene, obj, opt).run()
    scene, obj, opt = scene_of(shapes, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop_module, "Clearance", _Never)
        slow = SimulationLoop(scene, obj, opt).run()
    return fast, slow, proven


def _same(fast: Any, slow: Any) -> None:
    assert (fast.failure, fast.reason, fast.decided_at_s) == (
        slow.failure,
        slow.reason,
        slow.decided_at_s,
    )
    assert fast.steps == slow.steps
    for label in fast.parts:  # the physics is the same: the replay is exact
        assert fast.parts[label]["final_position_mm"] == slow.parts[label]["final_position_mm"]


def test_a_replay_from_the_saved_state_is_bit_identical(bd: Any, scene_of: Any) -> None:
    ball = bd.Pos(0, 0, 100) * bd.Sphere(10)
    ball.label = "ball"
    box = bd.Pos(5, 0, 20) * bd.Box(40, 40, 40)
    box.label = "box"
    scene, obj, opt = scene_of(bd.Compound(children=[ball, box]))
    m = scene.model
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    c = Clearance(scene, obj, opt, Verdict(scene, obj))
    for _ in range(100):  # into the contact
        mujoco.mj_step(m, d)
    c.begin(m, d)
    assert c.step(m, d, 50)
    first = (d.qpos.copy(), d.qvel.copy(), d.qacc_warmstart.copy())
    c.restore(m, d)
    for _ in range(50):
        mujoco.mj_step(m, d)
    again = (d.qpos, d.qvel, d.qacc_warmstart)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_a_falling_block_hits_the_pit_at_the_same_step(bd: Any, scene_of: Any) -> None:
    block = bd.Pos(0, 0, 200) * bd.Box(40, 40, 40)
    block.label = "block"
    pit = {"name": "pit", "kind": "forbid", "min": [-50, -50, 0], "max": [50, 50, 5]}
    fast, slow, proven = _both(
        scene_of, block, objectives={"zones": [pit]}, options={"duration_s": 1.0}
    )
    _same(fast, slow)
    assert fast.failure is not None and fast.failure.kind.value == "FORBID_ZONE_HIT"
    assert proven > 5  # the fall far above the pit needed no judging


def test_a_target_settling_in_the_goal_holds_it_for_the_same_time(bd: Any, scene_of: Any) -> None:
    block = bd.Pos(0, 0, 200) * bd.Box(40, 40, 40)
    block.label = "block"
    goal = {"name": "pad", "kind": "goal", "min": [-60, -60, 0], "max": [60, 60, 60]}
    fast, slow, proven = _both(
        scene_of,
        block,
        objectives={"target": "block", "zones": [goal], "goal_hold_s": 0.5},
        options={"duration_s": 2.0},
    )
    _same(fast, slow)
    assert fast.failure is None and fast.goal == slow.goal
    assert proven > 20


def test_a_part_leaving_the_bounds_leaves_them_at_the_same_step(bd: Any, scene_of: Any) -> None:
    ball = bd.Pos(0, 0, 300) * bd.Sphere(10)
    ball.label = "ball"
    bounds = {"min": [-100, -100, 150], "max": [100, 100, 400]}
    fast, slow, _ = _both(scene_of, ball, objectives={"bounds": bounds}, options={"duration_s": 1})
    _same(fast, slow)
    assert fast.failure is not None and fast.failure.kind.value == "OUT_OF_BOUNDS"


def test_a_settling_pile_is_judged_the_same(bd: Any, scene_of: Any) -> None:
    parts = []
    for i in range(6):
        s = bd.Pos((i % 3) * 45 - 45, (i // 3) * 45, 30 + 10 * i) * (
            bd.Box(40, 40, 40) if i % 2 else bd.Sphere(20)
        )
        s.label = f"p{i}"
        parts.append(s)
    near = {"name": "near", "kind": "forbid", "min": [80, -200, 0], "max": [81, 200, 300]}
    fast, slow, proven = _both(
        scene_of,
        bd.Compound(children=parts),
        objectives={"zones": [near]},
        options={"duration_s": 1.5},
    )
    _same(fast, slow)
    assert proven > 0


def test_no_proof_where_a_hinge_or_an_actuator_moves_a_part(bd: Any, scene_of: Any) -> None:
    bar = bd.Pos(100, 0, 300) * bd.Box(200, 20, 20)
    bar.label = "bar"
    hinge = {"bar": {"joint": {"type": "hinge", "axis": (0, 1, 0), "anchor": (0, 0, 300)}}}
    scene, obj, opt = scene_of(bar, parts=hinge)
    assert not Clearance(scene, obj, opt, Verdict(scene, obj)).usable
    free = bd.Pos(100, 0, 300) * bd.Box(200, 20, 20)
    free.label = "bar"
    scene, obj, opt = scene_of(free)
    assert Clearance(scene, obj, opt, Verdict(scene, obj)).usable


def test_a_scene_of_fixed_parts_only_runs(bd: Any, scene_of: Any) -> None:
    """Fixed parts are watched but never move (their body has no joint, and is its own root)."""
    wall = bd.Pos(0, 0, 50) * bd.Box(10, 100, 100)
    wall.label = "wall"
    pit = {"name": "pit", "kind": "forbid", "min": [200, -50, 0], "max": [300, 50, 5]}
    fast, slow, proven = _both(
        scene_of, wall, objectives={"zones": [pit]}, parts={"wall": {"fixed": True}}
    )
    _same(fast, slow)
    assert fast.failure is None and proven > 0


def test_no_proof_for_a_part_on_a_hinge_about_a_far_axis(bd: Any, scene_of: Any) -> None:
    """A ball on a hinge 50 m away, its range ±0.008°: not movable enough to count as a target
    DoF, but it sagged 7 mm through a 0.5 mm pit, and the proof (which read the hinge's speed as
    a free body's) said it stayed put (red team, F1)."""
    bob = bd.Pos(0, 0, 500) * bd.Sphere(2)
    bob.label = "bob"
    hinge = {"type": "hinge", "axis": (0, 1, 0), "anchor": (-50_000, 0, 500)}
    pit = {"name": "pit", "kind": "forbid", "min": [-50, -50, 496.5], "max": [50, 50, 497]}
    fast, slow, proven = _both(
        scene_of,
        bob,
        objectives={"zones": [pit]},
        options={"duration_s": 0.5},
        parts={"bob": {"joint": {**hinge, "range": (-0.008, 0.008)}}},
    )
    _same(fast, slow)
    assert proven == 0 and fast.failure is not None
    assert fast.failure.kind.value == "FORBID_ZONE_HIT"


@pytest.mark.parametrize("hold", [0.2 + 1e-9 + 1e-16, 0.3 + 1e-9, 0.5 - 1e-16])
def test_the_hold_is_counted_in_whole_steps_on_both_paths(
    bd: Any, scene_of: Any, hold: float
) -> None:
    """Adding n·dt per stretch and t_k − t_(k−1) per step once rounded to decisions a step
    apart (red team, F3)."""
    block = bd.Pos(0, 0, 200) * bd.Box(40, 40, 40)
    block.label = "block"
    goal = {"name": "pad", "kind": "goal", "min": [-60, -60, 0], "max": [60, 60, 60]}
    fast, slow, _ = _both(
        scene_of,
        block,
        objectives={"target": "block", "zones": [goal], "goal_hold_s": hold},
        options={"duration_s": 1.5},
    )
    _same(fast, slow)
    assert fast.failure is None

"""Verdict rules, one scene per rule, with exact assertions on the failure kind."""

from __future__ import annotations

from typing import Any

import pytest

from common.models.simulation import FailureKind
from worker.simulation.loop import RunSummary, SimulationLoop


def run(scene_of: Any, shapes: Any, **kw: Any) -> RunSummary:
    scene, obj, opt = scene_of(shapes, **kw)
    return SimulationLoop(scene, obj, opt).run()


def dropped_block(bd: Any, x: float = 0, z: float = 200) -> Any:
    block = bd.Pos(x, 0, z) * bd.Box(40, 40, 40)
    block.label = "block"
    return block


GOAL = {"name": "pad", "kind": "goal", "min": [-60, -60, 0], "max": [60, 60, 60]}


def test_goal_reached_and_held_is_success(bd: Any, scene_of: Any) -> None:
    s = run(
        scene_of,
        dropped_block(bd),
        objectives={"target": "block", "zones": [GOAL], "goal_hold_s": 0.5},
        options={"duration_s": 2},
    )
    assert s.failure is None
    assert s.goal is not None and s.goal["reached"] and s.goal["min_distance_mm"] == 0
    # Falls 180 mm into the pad (√(2·0.14/g) ≈ 0.17 s), then holds 0.5 s.
    assert s.decided_at_s is not None and 0.6 < s.decided_at_s < 0.8


def test_goal_never_reached_is_goal_not_reached(bd: Any, scene_of: Any) -> None:
    s = run(
        scene_of,
        dropped_block(bd, x=300),
        objectives={"target": "block", "zones": [GOAL]},
        options={"duration_s": 1},
    )
    assert s.kind == FailureKind.GOAL_NOT_REACHED
    assert s.goal is not None and s.goal["min_distance_mm"] > 200


def test_goal_left_before_the_hold_time_is_not_success(bd: Any, scene_of: Any) -> None:
    # The block falls through a thin goal slab: inside for a few ms only.
    slab = {"name": "slab", "kind": "goal", "min": [-60, -60, 100], "max": [60, 60, 110]}
    s = run(
        scene_of,
        dropped_block(bd),
        objectives={"target": "block", "zones": [slab], "goal_hold_s": 0.2},
        options={"duration_s": 1},
    )
    assert s.kind == FailureKind.GOAL_NOT_REACHED
    assert s.goal is not None and s.goal["reached"] and s.goal["hold_s"] < 0.2


def test_touching_a_forbid_zone_fails(bd: Any, scene_of: Any) -> None:
    pit = {"name": "pit", "kind": "forbid", "min": [-100, -100, 0], "max": [100, 100, 5]}
    s = run(scene_of, dropped_block(bd), objectives={"zones": [pit]}, options={"duration_s": 1})
    assert s.kind == FailureKind.FORBID_ZONE_HIT
    assert "'block'" in s.reason and "'pit'" in s.reason


def test_geometry_not_centre_of_mass_touches_the_forbid_zone(bd: Any, scene_of: Any) -> None:
    # The zone clips only the block's corner region (its centre stays 20 mm away).
    side = {"name": "side", "kind": "forbid", "min": [15, -100, 0], "max": [100, 100, 300]}
    s = run(scene_of, dropped_block(bd), objectives={"zones": [side]}, options={"duration_s": 0.1})
    assert s.kind == FailureKind.FORBID_ZONE_HIT


def test_leaving_the_bounds_fails(bd: Any, scene_of: Any) -> None:
    bounds = {"min": [-500, -500, 100], "max": [500, 500, 1000]}
    s = run(scene_of, dropped_block(bd), objectives={"bounds": bounds}, options={"duration_s": 1})
    assert s.kind == FailureKind.OUT_OF_BOUNDS
    assert s.decided_at_s is not None and 0.1 < s.decided_at_s < 0.2


def test_design_part_outside_the_build_zone_fails_at_t0(bd: Any, scene_of: Any) -> None:
    build = {"name": "bench", "kind": "build", "min": [-50, -50, 0], "max": [50, 50, 150]}
    s = run(scene_of, dropped_block(bd), objectives={"zones": [build]}, options={"duration_s": 1})
    assert s.kind == FailureKind.BUILD_ZONE_VIOLATION
    assert s.decided_at_s == 0.0


def test_part_inside_the_build_zone_passes(bd: Any, scene_of: Any) -> None:
    build = {"name": "bench", "kind": "build", "min": [-50, -50, 0], "max": [50, 50, 250]}
    s = run(scene_of, dropped_block(bd), objectives={"zones": [build]}, options={"duration_s": 1})
    assert s.failure is None


def test_interpenetrating_parts_at_start_fail(bd: Any, scene_of: Any) -> None:
    a = bd.Pos(0, 0, 100) * bd.Box(40, 40, 40)
    a.label = "a"
    b = bd.Pos(20, 0, 100) * bd.Box(40, 40, 40)  # overlaps a by 20 mm
    b.label = "b"
    s = run(scene_of, [a, b], options={"duration_s": 1})
    assert s.kind == FailureKind.INITIAL_PENETRATION
    assert "'a' and 'b'" in s.reason or "'b' and 'a'" in s.reason
    assert "overlap by 20.0 mm" in s.reason


def test_touching_parts_at_start_are_not_penetration(bd: Any, scene_of: Any) -> None:
    a = bd.Pos(0, 0, 20) * bd.Box(40, 40, 40)
    a.label = "a"
    b = bd.Pos(0, 0, 60) * bd.Box(40, 40, 40)  # stacked, face to face
    b.label = "b"
    s = run(scene_of, [a, b], options={"duration_s": 1})
    assert s.failure is None


def test_divergence_is_physics_instability(bd: Any, scene_of: Any) -> None:
    # A 1 g slider pushed by a 10 MN motor reaches absurd speed within a step or two.
    slider = bd.Pos(0, 0, 100) * bd.Box(10, 10, 1)
    slider.label = "slider"
    parts = {
        "slider": {
            "joint": {
                "type": "slide",
                "axis": [1, 0, 0],
                "actuator": {"kind": "motor", "force_limit": 1e7},
            }
        }
    }
    controls = [{"actuator": "slider", "kind": "constant", "value": 1e7}]
    s = run(scene_of, slider, parts=parts, options={"duration_s": 1, "controls": controls})
    assert s.kind == FailureKind.PHYSICS_INSTABILITY


def test_motor_held_at_its_limit_is_overload(bd: Any, scene_of: Any) -> None:
    # A servo asked to lift a 2.7 kg block on a slide, with only 1 N available.
    block = bd.Pos(0, 0, 100) * bd.Box(100, 100, 100)
    block.label = "block"
    block.material = "aluminum"
    parts = {
        "block": {
            "joint": {
                "type": "slide",
                "axis": [0, 0, 1],
                "range": [-40, 200],
                "actuator": {"kind": "position", "kp": 5, "force_limit": 1, "overload_s": 0.3},
            }
        }
    }
    controls = [{"actuator": "block", "kind": "constant", "value": 150}]
    s = run(scene_of, block, parts=parts, options={"duration_s": 2, "controls": controls})
    assert s.kind == FailureKind.MOTOR_OVERLOAD
    assert s.decided_at_s is not None and 0.3 <= s.decided_at_s < 0.4


def test_first_decisive_event_wins_and_stop_on_decision_ends_the_run(
    bd: Any, scene_of: Any
) -> None:
    # Held in the goal first (success latched), later pushed out of bounds: still SUCCESS.
    pit = {"name": "pad", "kind": "goal", "min": [-60, -60, 100], "max": [60, 60, 400]}
    bounds = {"min": [-500, -500, 60], "max": [500, 500, 1000]}
    objectives = {"target": "block", "zones": [pit], "goal_hold_s": 0.05, "bounds": bounds}
    full = run(scene_of, dropped_block(bd, z=300), objectives=objectives, options={"duration_s": 1})
    assert full.failure is None and full.sim_time_s > 0.99
    short = run(
        scene_of,
        dropped_block(bd, z=300),
        objectives=objectives,
        options={"duration_s": 1, "stop_on_decision": True},
    )
    assert short.failure is None
    assert short.decided_at_s is not None and short.sim_time_s < 0.2


def test_without_objectives_a_stable_run_is_success(bd: Any, scene_of: Any) -> None:
    s = run(scene_of, dropped_block(bd), options={"duration_s": 0.5})
    assert s.failure is None and "stable" in s.reason


# --- a blow-up is never "stable" -------------------------------------------------------------


def _spun_disc(bd: Any, torque: float) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A 1 g disc on a vertical hinge through its centre, driven by a motor: its centre of mass
    never moves, whatever it does."""
    disc = bd.Pos(0, 0, 200) * bd.Cylinder(20, 2)
    disc.label = "disc"
    disc.material = None
    parts = {
        "disc": {
            "density": 1000,
            "joint": {
                "type": "hinge",
                "axis": [0, 0, 1],
                "actuator": {"kind": "motor", "force_limit": 1e6},
            },
        }
    }
    controls = [{"actuator": "disc", "kind": "constant", "value": torque}]
    return disc, parts, {"duration_s": 1, "controls": controls}


def test_a_hinge_spinning_beyond_the_bound_is_instability_though_its_com_is_still(
    bd: Any, scene_of: Any
) -> None:
    """I = m r²/2 = 2.5e-3 kg·(0.02 m)²/2: 10 N·m spins it to ~2e7 rad/s in 1 s. The centre of
    mass never moves; the old check (centre-of-mass speed only) called this stable."""
    disc, parts, options = _spun_disc(bd, 10.0)
    s = run(scene_of, disc, parts=parts, options=options)
    assert s.kind == FailureKind.PHYSICS_INSTABILITY
    assert s.reason.startswith("Part 'disc' spun at "), s.reason
    assert s.parts["disc"]["max_speed_mm_s"] < 1.0


def test_honest_twin_a_slowly_driven_hinge_is_stable(bd: Any, scene_of: Any) -> None:
    """1e-6 N·m: α = 2 rad/s², 2 rad/s after 1 s."""
    disc, parts, options = _spun_disc(bd, 1e-6)
    s = run(scene_of, disc, parts=parts, options=options)
    assert s.failure is None, s.reason


def _pressed_bar(bd: Any, torque: float) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A bar hinged at one end 100 mm from where it rests on a fixed block; a motor presses
    it down, so the contact holds torque / 0.1 m in static equilibrium."""
    bar = bd.Pos(50, 0, 105) * bd.Box(120, 20, 10)
    bar.label = "bar"
    block = bd.Pos(100, 0, 50) * bd.Box(20, 40, 99.8)
    block.label = "block"
    parts = {
        "block": {"fixed": True},
        "bar": {
            "joint": {
                "type": "hinge",
                "axis": [0, 1, 0],  # positive turns +x towards −z: presses the bar down
                "anchor": [0, 0, 105],
                "damping": 1.0,
                "actuator": {"kind": "motor", "force_limit": 1e7},
            }
        },
    }
    controls = [{"actuator": "bar", "kind": "constant", "value": torque}]
    return [bar, block], parts, {"duration_s": 0.5, "controls": controls}


def test_a_contact_force_beyond_the_bound_is_instability(bd: Any, scene_of: Any) -> None:
    """The rule itself, on the pressed bar's scene: a state whose largest contact force is
    beyond MAX_CONTACT_FORCE_N (a solver that diverged inside a jam, as two gears on hinges
    did with 3.9e15 N) is PHYSICS_INSTABILITY, one just below it is not. (A real motor that
    strong breaks through the block first and fails on its spin instead.)"""
    import mujoco

    from worker.simulation.objectives import MAX_CONTACT_FORCE_N, Verdict

    shapes, parts, options = _pressed_bar(bd, 2e3)
    scene, obj, _ = scene_of(shapes, parts=parts, options=options)
    d = mujoco.MjData(scene.model)
    mujoco.mj_forward(scene.model, d)
    below = Verdict(scene, obj).update(scene.model, d, 0.01, 0.99 * MAX_CONTACT_FORCE_N)
    assert below is None
    beyond = Verdict(scene, obj).update(scene.model, d, 0.01, 3.9e15)
    assert beyond is not None and beyond.failure is not None
    assert beyond.failure.kind == FailureKind.PHYSICS_INSTABILITY
    assert beyond.reason == (
        "A contact force reached 3.9e+15 N at t=0.00 s (bound 1e+06 N): parts are jammed into "
        "each other and the solver diverged."
    )


def test_honest_twin_a_bar_pressed_within_the_bound_is_stable(bd: Any, scene_of: Any) -> None:
    shapes, parts, options = _pressed_bar(bd, 2e3)  # 20 kN on the block
    s = run(scene_of, shapes, parts=parts, options=options)
    assert s.failure is None, s.reason
    assert 1e3 < s.max_contact_force_n < 1e6  # 20 kN shared by up to 4 contact points


def _grid_of_blocks(bd: Any) -> list[Any]:
    blocks = []
    for i in range(6):
        for j in range(6):
            b = bd.Pos(60 * i, 60 * j, 20.2) * bd.Box(40, 40, 40)
            b.label = f"b{i}{j}"
            blocks.append(b)
    return blocks


def test_a_contact_arena_overflow_is_instability(bd: Any, scene_of: Any, monkeypatch: Any) -> None:
    """When MuJoCo's arena is full it drops contacts for the step and only a warning counter
    says so (parts then fall through each other): that run is invalid, never "stable"."""
    from worker.simulation import builder

    monkeypatch.setattr(builder, "arena_bytes", lambda geoms, dofs: 40_000)
    s = run(scene_of, _grid_of_blocks(bd), options={"duration_s": 0.5})
    assert s.kind == FailureKind.PHYSICS_INSTABILITY
    assert s.reason.startswith("The simulation is invalid at t="), s.reason
    assert "MuJoCo dropped contacts" in s.reason and "mjWARN_CONTACTFULL" in s.reason


def test_honest_twin_the_arena_is_sized_for_the_scene(bd: Any, scene_of: Any) -> None:
    s = run(scene_of, _grid_of_blocks(bd), options={"duration_s": 0.5})
    assert s.failure is None, s.reason
    assert s.warnings == {}


# --- who is to blame, and which rules fired -------------------------------------------------


def test_each_decision_names_its_culprit(bd: Any, scene_of: Any) -> None:
    pit = {"name": "pit", "kind": "forbid", "min": [-100, -100, 0], "max": [100, 100, 5]}
    bounds = {"min": [-500, -500, 100], "max": [500, 500, 1000]}
    hit = run(scene_of, dropped_block(bd), objectives={"zones": [pit]}, options={"duration_s": 1})
    out = run(scene_of, dropped_block(bd), objectives={"bounds": bounds}, options={"duration_s": 1})
    held = run(
        scene_of,
        dropped_block(bd),
        objectives={"target": "block", "zones": [GOAL], "goal_hold_s": 0.2},
        options={"duration_s": 1},
    )
    stable = run(scene_of, dropped_block(bd), options={"duration_s": 0.2})
    assert (hit.kind, hit.culprits) == (FailureKind.FORBID_ZONE_HIT, ("block",))
    assert (out.kind, out.culprits) == (FailureKind.OUT_OF_BOUNDS, ("block",))
    assert (held.kind, held.culprits) == (None, ("block",))
    assert (stable.kind, stable.culprits) == (None, ())


def test_interpenetration_blames_both_parts(bd: Any, scene_of: Any) -> None:
    a = bd.Pos(0, 0, 100) * bd.Box(40, 40, 40)
    a.label = "a"
    b = bd.Pos(20, 0, 100) * bd.Box(40, 40, 40)
    b.label = "b"
    s = run(scene_of, [a, b], options={"duration_s": 0.1})
    assert s.kind == FailureKind.INITIAL_PENETRATION and sorted(s.culprits) == ["a", "b"]


def test_rules_that_fire_after_the_decision_are_logged_as_not_counted(
    bd: Any, scene_of: Any
) -> None:
    """Through the pit into the goal below it: the forbid zone decides at ~0.15 s, the goal is
    held later, which the log shows but the verdict ignores."""
    pit = {"name": "pit", "kind": "forbid", "min": [-100, -100, 80], "max": [100, 100, 90]}
    s = run(
        scene_of,
        dropped_block(bd),
        objectives={"target": "block", "zones": [GOAL, pit], "goal_hold_s": 0.2},
        options={"duration_s": 1},
    )
    assert s.kind == FailureKind.FORBID_ZONE_HIT
    assert [(e["rule"], e["parts"], e["decisive"]) for e in s.events] == [
        ("FORBID_ZONE_HIT", ["block"], True),
        ("GOAL_HELD", ["block"], False),
    ]
    assert s.decided_at_s is not None
    assert s.events[0]["t_s"] == pytest.approx(s.decided_at_s) and s.events[1]["t_s"] > 0.3
    assert "'pit'" in s.events[0]["reason"] and s.events[1]["reason"].startswith("Part 'block'")


def test_a_rule_firing_at_every_check_is_logged_once(bd: Any, scene_of: Any) -> None:
    bounds = {"min": [-500, -500, 100], "max": [500, 500, 1000]}
    s = run(scene_of, dropped_block(bd), objectives={"bounds": bounds}, options={"duration_s": 1})
    assert [e["rule"] for e in s.events] == ["OUT_OF_BOUNDS"]  # it fired ~85 times

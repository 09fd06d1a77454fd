"""Solids collide as what they are (README "Collision shapes"): analytic solids as MuJoCo's
primitives (checked claims; a forged claim is refused next to its honest twin), prisms as
their exact convex pieces, other concave solids as CoACD's pieces, cached and checked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import pytest

from common.models.simulation import FailureKind
from worker.errors import Failed
from worker.job.decompositions import DecompositionCache
from worker.simulation.cad import extract_geometry
from worker.simulation.collision import decomposition_key
from worker.simulation.geometry import ConvexPieces, Geometry, Primitive, validate_geometry
from worker.simulation.loop import SimulationLoop

G = 9.81


def _slope(bd: Any, theta: float, solid: Any, lift: float) -> tuple[Any, Any]:
    frame = bd.Pos(0, 0, 300) * bd.Rot(0, theta, 0)
    plank = frame * bd.Box(900, 300, 20)
    plank.label = "plank"
    body = frame * bd.Pos(-300, 0, 10 + lift + 0.2) * solid
    return plank, body


def _downhill(theta: float) -> np.ndarray:
    t = math.radians(theta)
    return np.array([math.cos(t), 0.0, -math.sin(t)])


def _roll(bd: Any, scene_of: Any, solid: Any, lift: float, t: float) -> tuple[float, float, Any]:
    theta = 10.0
    plank, body = _slope(bd, theta, solid, lift)
    body.label = "roller"
    scene, obj, opt = scene_of(
        [plank, body], options={"duration_s": t}, parts={"plank": {"fixed": True}}
    )
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    r = s.parts["roller"]
    moved = np.array(r["final_position_mm"]) - np.array(r["initial_position_mm"])
    d = _downhill(theta)
    along = float(moved @ d)
    return along, float(abs(moved[1])), scene


def test_a_ball_rolls_as_a_ball(bd: Any, scene_of: Any) -> None:
    """(5/7) g sin θ t²/2 = 219.0 mm after 0.6 s down 10°; as an 868-triangle hull it rolled
    14% short and drifted sideways."""
    along, sideways, scene = _roll(bd, scene_of, bd.Sphere(20), 20, 0.6)
    expected = 5 / 7 * G * math.sin(math.radians(10)) * 0.6**2 / 2 * 1000
    assert along == pytest.approx(expected, rel=0.02), (along, expected)
    assert sideways < 0.1
    g = scene.parts["roller"].geom_ids
    assert [scene.model.geom_type[i] for i in g] == [mujoco.mjtGeom.mjGEOM_SPHERE]
    assert scene.model.geom_size[g[0]][0] == pytest.approx(0.020, rel=1e-9)


def test_a_cylinder_rolls_on_its_side(bd: Any, scene_of: Any) -> None:
    """A solid cylinder rolls with a = (2/3) g sin θ: 204.4 mm after 0.6 s down 10°."""
    cyl = bd.Rot(90, 0, 0) * bd.Cylinder(20, 60)  # axis along y, across the slope
    along, sideways, scene = _roll(bd, scene_of, cyl, 20, 0.6)
    expected = 2 / 3 * G * math.sin(math.radians(10)) * 0.6**2 / 2 * 1000
    assert along == pytest.approx(expected, rel=0.02), (along, expected)
    assert sideways < 0.1
    g = scene.parts["roller"].geom_ids
    assert [scene.model.geom_type[i] for i in g] == [mujoco.mjtGeom.mjGEOM_CYLINDER]


def test_a_box_resting_flat_stays_put(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(0, 0, 15.1) * bd.Rot(0, 0, 30) * bd.Box(80, 50, 30)
    box.label = "box"
    scene, obj, opt = scene_of(box, options={"duration_s": 2.0})
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None
    moved = np.array(s.parts["box"]["final_position_mm"]) - np.array([0, 0, 15.1])
    assert np.abs(moved[:2]).max() < 0.05 and abs(moved[2] + 0.1) < 0.1
    assert scene.model.geom_type[scene.parts["box"].geom_ids[0]] == mujoco.mjtGeom.mjGEOM_BOX


# --- a primitive claim is data from the design's process -------------------------------------


def _claimed(bd: Any, shape: Any, primitive: Primitive | None) -> Geometry:
    shape.label = "p"
    geom = extract_geometry(shape)
    solid = geom.parts[0].solids[0].model_copy(update={"primitive": primitive})
    part = geom.parts[0].model_copy(update={"solids": [solid]})
    return geom.model_copy(update={"parts": [part]})


def test_a_forged_sphere_claim_on_a_cube_is_refused(bd: Any) -> None:
    """The cube's corners all lie on its circumscribed sphere, so the vertex test alone would
    pass: the mesh does not cover the sphere (its volume is 37% of it)."""
    cube = bd.Box(20, 20, 20)
    forged = Primitive(kind="sphere", center=(0, 0, 0), size=(10 * math.sqrt(3), 0, 0))
    with pytest.raises(Failed) as e:
        validate_geometry(_claimed(bd, cube, forged))
    assert e.value.kind == FailureKind.INVALID_GEOMETRY
    assert (
        "solid 0 is claimed to be a sphere but its mesh is not one (it encloses" in e.value.reason
    )


def test_a_forged_sphere_claim_of_the_inscribed_ball_is_refused(bd: Any) -> None:
    cube = bd.Box(20, 20, 20)
    forged = Primitive(kind="sphere", center=(0, 0, 0), size=(10, 0, 0))
    with pytest.raises(Failed, match=r"a vertex lies .* mm off its surface"):
        validate_geometry(_claimed(bd, cube, forged))


def test_honest_twin_the_cubes_own_claim_is_a_box(bd: Any) -> None:
    geom = extract_geometry(bd.Box(20, 20, 20))
    prim = geom.parts[0].solids[0].primitive
    assert prim is not None and prim.kind == "box"
    assert prim.size == pytest.approx((10, 10, 10))
    validate_geometry(geom)


def test_honest_twin_a_sphere_claims_a_sphere_and_passes(bd: Any) -> None:
    geom = extract_geometry(bd.Pos(5, 6, 7) * bd.Sphere(12))
    prim = geom.parts[0].solids[0].primitive
    assert prim is not None and prim.kind == "sphere"
    assert prim.center == pytest.approx((5, 6, 7)) and prim.size[0] == pytest.approx(12)
    validate_geometry(geom)


def test_a_hemisphere_claimed_as_a_sphere_is_refused(bd: Any) -> None:
    """Every vertex is on the sphere, but the mesh covers half of it."""
    half = bd.Sphere(10) - bd.Pos(0, 0, -10) * bd.Box(30, 30, 20)
    forged = Primitive(kind="sphere", center=(0, 0, 0), size=(10, 0, 0))
    with pytest.raises(Failed, match="claimed to be a sphere"):
        validate_geometry(_claimed(bd, half, forged))


# --- concave solids ----------------------------------------------------------------------------


def test_a_ball_falls_through_a_hole(bd: Any, scene_of: Any) -> None:
    """A pillow block's through-hole: as a hull the ball rested on top."""
    plate = bd.Pos(0, 0, 100) * (bd.Box(80, 80, 10) - bd.Cylinder(10, 10))
    plate.label = "plate"
    ball = bd.Pos(0, 0, 120) * bd.Sphere(6)
    ball.label = "ball"
    scene, obj, opt = scene_of([plate, ball], options={"duration_s": 0.6},
                               parts={"plate": {"fixed": True}})  # fmt: skip
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    assert s.parts["ball"]["final_position_mm"][2] == pytest.approx(6, abs=0.5)  # on the floor
    assert len(scene.parts["plate"].geom_ids) > 1  # exact prism pieces


def test_honest_twin_a_ball_too_big_for_the_hole_rests_on_it(bd: Any, scene_of: Any) -> None:
    plate = bd.Pos(0, 0, 100) * (bd.Box(80, 80, 10) - bd.Cylinder(10, 10))
    plate.label = "plate"
    ball = bd.Pos(0, 0, 130) * bd.Sphere(14)
    ball.label = "ball"
    scene, obj, opt = scene_of([plate, ball], options={"duration_s": 0.6},
                               parts={"plate": {"fixed": True}})  # fmt: skip
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    # Rests in the hole's rim: centre 105 + √(14² − 10²) = 114.8 mm up.
    assert s.parts["ball"]["final_position_mm"][2] == pytest.approx(114.8, abs=1.0)


def test_a_ball_dropped_into_a_one_piece_cup_rests_on_its_inner_floor(
    bd: Any, scene_of: Any
) -> None:
    """A turned cup (not a prism): CoACD's pieces. As a hull the ball rested on the rim."""
    cup = bd.Pos(0, 0, 30) * (bd.Cylinder(40, 60) - bd.Pos(0, 0, 4) * bd.Cylinder(36, 60))
    cup.label = "cup"
    ball = bd.Pos(0, 0, 80) * bd.Sphere(10)
    ball.label = "ball"
    scene, obj, opt = scene_of([cup, ball], options={"duration_s": 1.0})
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    z = s.parts["ball"]["final_position_mm"][2]
    assert 4 + 10 - 0.5 < z < 4 + 10 + 2.5, z  # on the 4 mm floor, within CoACD's accuracy
    assert scene.decomposer.warnings == []
    assert len(scene.decomposer.computed) == 1


def _gears(bd: Any, backlash: float) -> tuple[list[Any], dict[str, Any], float]:
    from bd_warehouse.gear import SpurGear

    z1, z2, module = 20, 30, 2.0
    a = module * (z1 + z2) / 2 + backlash
    g1 = bd.Pos(0, 0, 100) * SpurGear(module=module, tooth_count=z1, pressure_angle=20,
                                      root_fillet=0.5, thickness=10)  # fmt: skip
    g1.label = "driver"
    # Half a tooth turned, so a gap of the driven gear faces a tooth of the driver.
    g2 = (
        bd.Pos(a, 0, 100)
        * bd.Rot(0, 0, 180 / z2)
        * SpurGear(module=module, tooth_count=z2, pressure_angle=20, root_fillet=0.5, thickness=10)
    )
    g2.label = "driven"
    # Lubricated teeth (μ 0.1), and a load on the driven gear (damping) that keeps its teeth
    # against the driver's across the backlash.
    parts = {
        "driver": {"friction": 0.1,
                   "joint": {"type": "hinge", "axis": [0, 0, 1], "anchor": [0, 0, 100],
                             "damping": 0.001,
                             "actuator": {"kind": "velocity", "kv": 0.05, "force_limit": 5}}},
        "driven": {"friction": 0.1,
                   "joint": {"type": "hinge", "axis": [0, 0, 1], "anchor": [a, 0, 100],
                             "damping": 0.05}},
    }  # fmt: skip
    return [g1, g2], parts, -z1 / z2


def _turn(q: list[float]) -> float:
    return math.degrees(2 * math.atan2(q[3], q[0]))


def test_two_meshing_gears_start_clean_and_one_turns_the_other(bd: Any, scene_of: Any) -> None:
    """bd_warehouse spur gears (20 and 30 teeth, module 2) 0.3 mm further apart than their
    pitch circles: as hulls they overlapped by 5.2 mm at t=0. Driven at up to 1 rad/s for 2 s
    against the load, the driven gear turns back by z1/z2 of the driver's turn (to 2%)."""
    shapes, parts, ratio = _gears(bd, 0.3)
    controls = [{"actuator": "driver", "kind": "constant", "value": 1.0}]
    scene, obj, opt = scene_of(shapes, parts=parts,
                               options={"duration_s": 2.0, "controls": controls})  # fmt: skip
    d = mujoco.MjData(scene.model)
    mujoco.mj_forward(scene.model, d)
    assert min((d.contact[i].dist for i in range(d.ncon)), default=0.0) > -0.5e-3
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    driver, driven = (_turn(s.parts[n]["final_quat"]) for n in ("driver", "driven"))
    assert driver > 30.0
    assert driven / driver == pytest.approx(ratio, rel=0.02), (driver, driven)


def test_a_latch_with_quarter_millimetre_clearance_starts_clean(bd: Any, scene_of: Any) -> None:
    """A bolt in a U-shaped keeper with 0.25 mm on each side: the keeper's hull swallowed the
    bolt (INITIAL_PENETRATION); its exact pieces leave it free to slide out."""
    keeper = bd.Pos(0, 0, 10) * (bd.Box(40, 30, 20) - bd.Pos(0, 0, 3) * bd.Box(40, 10.5, 20))
    keeper.label = "keeper"
    bolt = bd.Pos(0, 0, 18) * bd.Box(60, 10, 10)
    bolt.label = "bolt"
    parts = {"keeper": {"fixed": True},
             "bolt": {"joint": {"type": "slide", "axis": [1, 0, 0],
                                "actuator": {"kind": "motor", "force_limit": 1}}}}  # fmt: skip
    controls = [{"actuator": "bolt", "kind": "constant", "value": 0.05}]
    scene, obj, opt = scene_of([keeper, bolt], parts=parts,
                               options={"duration_s": 0.5, "controls": controls})  # fmt: skip
    s = SimulationLoop(scene, obj, opt).run()
    assert s.failure is None, s.reason
    moved = s.parts["bolt"]["final_position_mm"][0] - s.parts["bolt"]["initial_position_mm"][0]
    assert moved > 5.0  # it slides in its slot


# --- the decomposition cache -------------------------------------------------------------------


def _cup_geometry(bd: Any) -> Geometry:
    cup = bd.Pos(0, 0, 30) * (bd.Cylinder(40, 60) - bd.Pos(0, 0, 4) * bd.Cylinder(36, 60))
    cup.label = "cup"
    return extract_geometry(cup)


def test_a_poisoned_cache_entry_is_refused_and_removed(bd: Any, tmp_path: Path) -> None:
    """A piece that fills the cup's hollow (a lid) would make a ball rest on the rim: it holds
    far more than the cup and is refused when read; the entry is deleted."""
    geom = _cup_geometry(bd)
    mesh = geom.parts[0].solids[0]
    v, _ = mesh.arrays()
    key = decomposition_key(mesh)
    lid = ConvexPieces.from_arrays([v])  # the hull of the whole cup
    (tmp_path / f"{key}.json").write_text(lid.model_dump_json())
    cache = DecompositionCache(tmp_path)
    assert cache.lookup(geom) == {}
    assert not (tmp_path / f"{key}.json").exists()
    assert cache.store(geom, {key: lid}) == 0


def test_honest_twin_a_decomposition_is_cached_and_reused(bd: Any, tmp_path: Path) -> None:
    from common.models.simulation import Objectives, SimOptions
    from worker.simulation.builder import build_scene
    from worker.simulation.collision import Decomposer

    geom = _cup_geometry(bd)
    first = build_scene(geom, Objectives(), SimOptions(render=False))
    computed = first.decomposer.computed
    assert len(computed) == 1
    cache = DecompositionCache(tmp_path)
    assert cache.store(geom, computed) == 1
    cached = cache.lookup(geom)
    assert cached == computed
    again = build_scene(geom, Objectives(), SimOptions(render=False), Decomposer(cached=cached))
    assert again.decomposer.computed == {}  # nothing recomputed
    assert len(again.parts["cup"].geom_ids) == len(first.parts["cup"].geom_ids)


def test_a_solid_that_only_looks_like_a_primitive_is_not_claimed(bd: Any) -> None:
    """Two sphere faces of different centres (a lens) and a cylinder cut at a slant: an
    honest design must never fail the supervisor's check, so the build claims nothing."""
    lens = bd.Sphere(10) & bd.Pos(12, 0, 0) * bd.Sphere(10)
    slant = bd.Cylinder(10, 30) - bd.Pos(0, 0, 15) * bd.Rot(20, 0, 0) * bd.Box(40, 40, 10)
    for shape in (lens, slant):
        geom = extract_geometry(shape)
        assert geom.parts[0].solids[0].primitive is None
        validate_geometry(geom)


def test_when_the_budget_runs_out_the_solid_collides_as_its_hull_with_a_warning(bd: Any) -> None:
    from common.models.simulation import Objectives, SimOptions
    from worker.simulation.builder import build_scene
    from worker.simulation.collision import Decomposer

    geom = _cup_geometry(bd)
    scene = build_scene(geom, Objectives(), SimOptions(render=False), Decomposer(budget_s=0.2))
    assert scene.decomposer.warnings == [
        "Part 'cup' solid 0 is concave but was not decomposed (the job's 0.2 s decomposition "
        "budget ran out); it collides as its convex hull."
    ]
    assert scene.decomposer.stats["hull_fallback"] == 1
    assert len(scene.parts["cup"].geom_ids) == 1  # the mesh itself: MuJoCo collides its hull

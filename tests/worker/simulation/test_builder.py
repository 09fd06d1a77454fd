"""Geometry → MuJoCo: units, exact mass and inertia, joints, zones."""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np
import pytest

from worker.simulation.geometry import DEFAULT_DENSITY


def test_cube_of_100mm_at_density_1000_weighs_1kg(bd: Any, scene_of: Any) -> None:
    cube = bd.Pos(0, 0, 50) * bd.Box(100, 100, 100)
    cube.label = "cube"
    scene, _, _ = scene_of(cube)
    bid = scene.parts["cube"].body_id
    assert DEFAULT_DENSITY == 1000.0
    assert scene.model.body_mass[bid] == pytest.approx(1.000, abs=1e-9)
    # I = m·a²/6 = 1 kg · (0.1 m)² / 6 about each axis through the centre of mass.
    assert scene.model.body_inertia[bid] == pytest.approx([0.01 / 6] * 3, rel=1e-6)


def test_positions_are_converted_from_mm_to_m(bd: Any, scene_of: Any) -> None:
    ball = bd.Pos(120, -40, 300) * bd.Sphere(10)
    ball.label = "ball"
    scene, _, _ = scene_of(ball)
    d = mujoco.MjData(scene.model)
    mujoco.mj_forward(scene.model, d)
    # The centre of mass is the mesh's (trusted code's), within the tessellation of the exact one.
    assert d.xipos[scene.parts["ball"].body_id] == pytest.approx([0.12, -0.04, 0.30], abs=1e-5)


def test_mass_comes_from_the_cad_solid_not_the_mesh(bd: Any, scene_of: Any) -> None:
    # A plate with holes: MuJoCo's legacy mesh inertia overestimates it; CAD volume is exact.
    plate = (
        bd.Box(100, 100, 10)
        - bd.Pos(-25, 0, 0) * bd.Cylinder(15, 10)
        - bd.Pos(25, 0, 0) * bd.Cylinder(15, 10)
    )
    plate = bd.Pos(0, 0, 5) * plate
    plate.label = "plate"
    scene, _, _ = scene_of(plate, parts={"plate": {"density": 2000}})
    volume_m3 = (100 * 100 * 10 - 2 * math.pi * 15**2 * 10) * 1e-9
    got = scene.model.body_mass[scene.parts["plate"].body_id]
    assert got == pytest.approx(2000 * volume_m3, rel=1e-6)


def test_build123d_material_sets_density_and_parts_override_it(bd: Any, scene_of: Any) -> None:
    a = bd.Pos(0, 0, 50) * bd.Box(100, 100, 100)
    a.label, a.material = "alu", "aluminum"
    b = bd.Pos(300, 0, 50) * bd.Box(100, 100, 100)
    b.label, b.material = "heavy", "aluminum"
    scene, _, _ = scene_of([a, b], parts={"heavy": {"density": 5000}})
    assert scene.parts["alu"].mass_kg == pytest.approx(2.7, rel=1e-6)
    assert scene.parts["heavy"].mass_kg == pytest.approx(5.0, rel=1e-6)


def test_fixed_part_has_no_joint_and_free_part_has_a_free_joint(bd: Any, scene_of: Any) -> None:
    base = bd.Pos(0, 0, 5) * bd.Box(200, 200, 10)
    base.label = "base"
    box = bd.Pos(0, 0, 100) * bd.Box(20, 20, 20)
    box.label = "box"
    scene, _, _ = scene_of([base, box], parts={"base": {"fixed": True}})
    m = scene.model
    assert m.body_jntnum[scene.parts["base"].body_id] == 0
    jid = m.body_jntadr[scene.parts["box"].body_id]
    assert m.jnt_type[jid] == mujoco.mjtJoint.mjJNT_FREE
    assert not scene.parts["base"].movable and scene.parts["box"].movable


def test_hinge_to_another_part_nests_the_body(bd: Any, scene_of: Any) -> None:
    base = bd.Pos(0, 0, 50) * bd.Box(40, 40, 100)
    base.label = "base"
    arm = bd.Pos(60, 0, 110) * bd.Box(120, 10, 10)
    arm.label = "arm"
    parts = {
        "base": {"fixed": True},
        "arm": {
            "joint": {
                "type": "hinge",
                "parent": "base",
                "axis": [0, 0, 1],
                "anchor": [0, 0, 110],
                "range": [-90, 90],
            }
        },
    }
    scene, _, _ = scene_of([base, arm], parts=parts)
    m = scene.model
    arm_id, base_id = scene.parts["arm"].body_id, scene.parts["base"].body_id
    assert m.body_parentid[arm_id] == base_id
    jid = m.body_jntadr[arm_id]
    assert m.jnt_type[jid] == mujoco.mjtJoint.mjJNT_HINGE
    assert m.jnt_range[jid] == pytest.approx([-math.pi / 2, math.pi / 2])
    # The joint sits at the anchor: 60 mm from the arm's centre of mass, in -x.
    assert m.jnt_pos[jid] == pytest.approx([-0.06, 0, 0], abs=1e-9)


def test_zones_are_drawn_but_never_collide(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(0, 0, 10) * bd.Box(20, 20, 20)
    box.label = "box"
    zones = [{"name": "g", "kind": "goal", "min": [-50, -50, 0], "max": [50, 50, 50]}]
    scene, _, _ = scene_of(box, objectives={"target": "box", "zones": zones})
    g = scene.zone_geoms["g"]
    assert scene.model.geom_contype[g] == 0 and scene.model.geom_conaffinity[g] == 0
    assert scene.model.geom_rgba[g][3] < 1.0
    assert scene.model.geom_size[g] == pytest.approx([0.05, 0.05, 0.025])


def test_autoreset_is_disabled(bd: Any, scene_of: Any) -> None:
    box = bd.Box(10, 10, 10)
    box.label = "box"
    scene, _, _ = scene_of(bd.Pos(0, 0, 5) * box)
    assert scene.model.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_AUTORESET


def test_camera_extent_covers_every_part(bd: Any, scene_of: Any) -> None:
    a = bd.Pos(-500, 0, 10) * bd.Box(20, 20, 20)
    a.label = "a"
    b = bd.Pos(500, 0, 10) * bd.Box(20, 20, 20)
    b.label = "b"
    scene, _, _ = scene_of([a, b])
    assert scene.extent_center_m == pytest.approx(np.array([0, 0, 0.01]), abs=1e-6)
    assert scene.extent_radius_m >= 0.5

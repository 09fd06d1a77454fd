"""validate_geometry: what must never reach the physics, with the exact failure kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import Failed
from worker.simulation.geometry import (
    Geometry,
    Mesh,
    Part,
    PartMeta,
    validate_geometry,
)

CUBE_V = np.array([[x, y, z] for x in (0, 10) for y in (0, 10) for z in (0, 10)], dtype=np.float64)
CUBE_T = np.array(
    [
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ]
)  # fmt: skip
CUBE_I = 10**5 / 6  # a⁵/6 for a = 10 mm


def part(
    label: str = "p", *, vertices: Any = CUBE_V, meta: dict[str, Any] | None = None, **kw: Any
) -> Part:
    fields: dict[str, Any] = {
        "label": label,
        "source": "design",
        "volume_mm3": 1000.0,
        "com_mm": (5.0, 5.0, 5.0),
        "inertia_mm5": (CUBE_I, CUBE_I, CUBE_I, 0.0, 0.0, 0.0),
        "solids": [Mesh.from_arrays(np.asarray(vertices), CUBE_T)],
        "meta": PartMeta.model_validate(meta or {}),
    }
    fields.update(kw)
    return Part(**fields)


def kind_of(*parts: Part, **kw: Any) -> str:
    with pytest.raises(Failed) as e:
        validate_geometry(Geometry(parts=list(parts)), **kw)
    return e.value.kind


def test_a_valid_cube_passes() -> None:
    validate_geometry(Geometry(parts=[part()]))


def test_nan_coordinates_are_invalid() -> None:
    v = CUBE_V.copy()
    v[3, 1] = np.nan
    assert kind_of(part(vertices=v)) == "INVALID_GEOMETRY"


def test_enormous_coordinates_are_invalid() -> None:
    assert kind_of(part(vertices=CUBE_V + 2e6)) == "INVALID_GEOMETRY"


def test_flat_solid_is_invalid() -> None:
    v = CUBE_V.copy()
    v[:, 2] = 0.0
    assert kind_of(part(vertices=v)) == "INVALID_GEOMETRY"


def test_triangle_index_out_of_range_is_invalid() -> None:
    bad = Mesh.from_arrays(CUBE_V, np.vstack([CUBE_T, [[0, 1, 99]]]))
    assert kind_of(part(solids=[bad])) == "INVALID_GEOMETRY"


def test_truncated_mesh_buffer_is_invalid() -> None:
    good = Mesh.from_arrays(CUBE_V, CUBE_T)
    import base64

    short = base64.b64encode(base64.b64decode(good.vertices)[:-4]).decode()
    assert kind_of(part(solids=[Mesh(vertices=short, triangles=good.triangles)])) == (
        "INVALID_GEOMETRY"
    )


def test_impossible_inertia_is_invalid() -> None:
    # Violates the triangle inequality Ixx + Iyy ≥ Izz.
    assert kind_of(part(inertia_mm5=(1.0, 1.0, 5.0, 0, 0, 0))) == "INVALID_GEOMETRY"


@pytest.mark.parametrize(
    "claim",
    [
        {"com_mm": (1000.0, 5.0, 5.0)},  # the centre of mass a metre from the mesh
        {"volume_mm3": 1e15},  # a million tonnes in a 10 mm cube
        {"inertia_mm5": (1e30, 1e30, 1e30, 0.0, 0.0, 0.0)},  # a cube that cannot turn
    ],
)
def test_mass_properties_impossible_for_the_mesh_are_invalid(claim: dict[str, Any]) -> None:
    assert kind_of(part(**claim)) == "INVALID_GEOMETRY"


def test_real_mass_properties_pass_the_mesh_checks(bd: Any) -> None:
    """Exact CAD mass properties against tessellated meshes: curved, hollow, off-centre and
    multi-solid parts all pass (the meshes' box is grown by a tessellation margin)."""
    from worker.simulation.cad import extract_geometry

    ring = bd.Pos(40, 0, 0) * (bd.Cylinder(20, 5) - bd.Cylinder(19, 5))
    ring.label = "ring"
    ball = bd.Pos(0, 80, 0) * bd.Sphere(0.5)
    ball.label = "ball"
    pair = bd.Compound([bd.Box(1, 1, 1), bd.Pos(100, 0, 0) * bd.Box(1, 1, 1)])  # two solids
    pair.label = "pair"
    validate_geometry(extract_geometry([ring, ball, pair]))


def test_duplicate_labels_are_invalid() -> None:
    assert kind_of(part("a"), part("a")) == "INVALID_GEOMETRY"


def test_joint_to_unknown_part_is_invalid() -> None:
    meta = {"joint": {"type": "hinge", "parent": "ghost"}}
    assert kind_of(part("a", meta=meta)) == "INVALID_GEOMETRY"


def test_design_may_not_grab_a_movable_environment_part() -> None:
    target = part("target", source="environment")
    claw = part("claw", meta={"joint": {"type": "weld", "parent": "target"}})
    with pytest.raises(Failed, match="may not be jointed to environment part 'target'"):
        validate_geometry(Geometry(parts=[target, claw]))


def test_design_may_mount_on_a_fixed_environment_part() -> None:
    table = part("table", source="environment", meta={"fixed": True})
    arm = part("arm", meta={"joint": {"type": "hinge", "parent": "table"}})
    validate_geometry(Geometry(parts=[table, arm]))


def test_environment_may_not_joint_to_the_design() -> None:
    base = part("base", meta={"fixed": True})
    fixture = part(
        "fixture", source="environment", meta={"joint": {"type": "weld", "parent": "base"}}
    )
    assert kind_of(base, fixture) == "INVALID_GEOMETRY"


def test_joint_cycle_is_invalid() -> None:
    a = part("a", meta={"joint": {"type": "weld", "parent": "b"}})
    b = part("b", meta={"joint": {"type": "weld", "parent": "a"}})
    assert kind_of(a, b) == "INVALID_GEOMETRY"


def test_too_many_parts_is_a_geometry_limit() -> None:
    parts = [part(f"p{i}") for i in range(4)]
    assert kind_of(*parts, max_parts=3) == "GEOMETRY_LIMIT"


def test_too_many_triangles_is_a_geometry_limit() -> None:
    assert kind_of(part("a"), part("b"), max_triangles=23) == "GEOMETRY_LIMIT"


def test_fixed_and_jointed_at_once_is_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="fixed or jointed"):
        PartMeta.model_validate({"fixed": True, "joint": {"type": "hinge"}})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=3, max_size=3))
def test_any_non_finite_vertex_is_refused(xyz: list[float]) -> None:
    v = CUBE_V.copy()
    v[0] = xyz
    finite = np.isfinite(v).all() and np.abs(v).max() < 1e6
    g = Geometry(parts=[part(vertices=v)])
    if finite:
        try:
            validate_geometry(g)
        except Failed as e:  # a finite vertex can still flatten or wreck the cube
            assert e.kind == "INVALID_GEOMETRY"
    else:
        with pytest.raises(Failed) as e:
            validate_geometry(g)
        assert e.value.kind == "INVALID_GEOMETRY"


def test_triangle_count_matches_the_decoded_mesh() -> None:
    m = Mesh.from_arrays(CUBE_V, CUBE_T)
    assert m.triangle_count == len(m.arrays()[1]) == 12


def test_a_claimed_volume_unlike_the_mesh_is_invalid() -> None:
    """Mass follows the claimed volume; a forged build frame could make a part 1000× lighter."""
    with pytest.raises(
        Failed, match="its CAD solid has a volume of 10 mm³ but its mesh encloses 1000 mm³"
    ):
        small = CUBE_I / 100
        validate_geometry(
            Geometry(parts=[part(volume_mm3=10.0, inertia_mm5=(small, small, small, 0, 0, 0))])
        )


def test_a_claimed_centre_of_mass_inside_the_box_but_off_the_mesh_is_invalid() -> None:
    """Within its own bounding box a forger could still move the point the goal rule follows."""
    with pytest.raises(
        Failed, match=r"the centre of mass of its CAD solid is .* mm from that of its mesh"
    ):
        validate_geometry(Geometry(parts=[part(com_mm=(9.0, 5.0, 5.0))]))


def test_mesh_volume_does_not_depend_on_triangle_orientation() -> None:
    flipped = Mesh.from_arrays(CUBE_V, CUBE_T[:, ::-1])
    validate_geometry(Geometry(parts=[part(solids=[flipped])]))


def test_vertices_over_the_cap_are_geometry_limit() -> None:
    assert kind_of(part(), max_vertices=7) == "GEOMETRY_LIMIT"


def test_more_than_three_vertices_per_triangle_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4 triangles over a million vertices cost MuJoCo's hull the whole physics time limit;
    the count comes from the encoded length, so nothing is decoded to refuse it."""
    padded = np.concatenate([CUBE_V, np.zeros((1_000_000, 3))])
    m = Mesh.from_arrays(padded, CUBE_T)

    def no_decode(self: Mesh) -> Any:
        raise AssertionError("the mesh must be refused from its length")

    monkeypatch.setattr(Mesh, "arrays", no_decode)
    with pytest.raises(Failed) as e:
        validate_geometry(Geometry(parts=[part(solids=[m])]), max_vertices=2_000_000)
    assert e.value.kind == "INVALID_GEOMETRY"
    assert e.value.reason == (
        "The geometry was rejected: part 'p' has a solid of 1000008 vertices for 12 triangles."
    )


def test_a_vertex_no_triangle_uses_is_invalid() -> None:
    extra = np.concatenate([CUBE_V, [[5.0, 5.0, 5.0]]])
    with pytest.raises(Failed) as e:
        validate_geometry(Geometry(parts=[part(vertices=extra)]))
    assert e.value.kind == "INVALID_GEOMETRY"
    assert e.value.reason.endswith("part 'p' has 1 vertices that no triangle uses.")

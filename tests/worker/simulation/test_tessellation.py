"""Tessellation follows the part (README "Tessellation"): a deflection relative to each solid's
size under a per-request setting, a triangle cap that names the part and is hit before the mesh
is copied out, and a volume check whose tolerance follows the deflection actually used."""

from __future__ import annotations

from typing import Any

import pytest

from common.models.simulation import FailureKind, SimOptions
from worker.errors import Failed
from worker.simulation.cad import extract_geometry
from worker.simulation.geometry import deflection, validate_geometry


def _triangles(geom: Any) -> int:
    return sum(m.triangle_count for p in geom.parts for m in p.solids)


def _vase(bd: Any) -> Any:
    """A thin-walled turned vase (a loft of circles, shelled): curved everywhere, 1.5 mm wall."""
    with bd.BuildPart() as vase:
        with bd.BuildSketch():
            bd.Circle(30)
        with bd.BuildSketch(bd.Plane.XY.offset(60)):
            bd.Circle(45)
        with bd.BuildSketch(bd.Plane.XY.offset(120)):
            bd.Circle(20)
        bd.loft()
        bd.offset(amount=-1.5, openings=vase.faces().sort_by(bd.Axis.Z)[-1])
    part = vase.part
    part.label = "vase"
    return part


def test_the_presets_scale_with_size_within_bounds() -> None:
    assert deflection("normal", 100.0) == (pytest.approx(0.2), 0.3)
    assert deflection("normal", 1.0)[0] == 0.02  # lower bound
    assert deflection("normal", 10_000.0)[0] == 1.0  # upper bound
    assert deflection("coarse", 100.0)[0] > deflection("normal", 100.0)[0]
    assert deflection("fine", 100.0)[0] < deflection("normal", 100.0)[0]
    assert deflection(0.05, 100.0)[0] == 0.05


def test_coarse_fine_and_millimetres_change_the_triangle_count(bd: Any) -> None:
    counts = {
        setting: _triangles(extract_geometry(_vase(bd), tessellation=setting))
        for setting in ("coarse", "normal", "fine", 0.01)
    }
    assert counts["coarse"] < counts["normal"] < counts["fine"] < counts[0.01], counts


def test_the_setting_reaches_the_build_through_the_options() -> None:
    assert SimOptions().tessellation == "normal"
    assert SimOptions(tessellation=0.2).tessellation == 0.2
    with pytest.raises(ValueError):
        SimOptions(tessellation="medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SimOptions(tessellation=0.0)


def test_the_triangle_cap_names_the_part_and_its_count_before_copying(bd: Any) -> None:
    with pytest.raises(Failed) as e:
        extract_geometry(_vase(bd), tessellation="fine", max_triangles=1000)
    assert e.value.kind == FailureKind.GEOMETRY_LIMIT
    assert e.value.reason.startswith(
        "The geometry was rejected: part 'vase' takes the scene past the cap of 1000 triangles "
        "(the part has "
    )
    assert "choose a coarser `tessellation`" in e.value.reason


@pytest.mark.parametrize("setting", ["coarse", "normal", "fine"])
def test_a_thin_walled_vase_passes_the_volume_check_at_every_setting(bd: Any, setting: str) -> None:
    """At coarse deflection its mesh is several % off its CAD volume: that is what the
    deflection explains, not a lie."""
    geom = extract_geometry(_vase(bd), tessellation=setting)
    validate_geometry(geom, tessellation=setting)


def test_a_tea_cup_with_a_handle_passes_coarse(bd: Any) -> None:
    body = bd.Cylinder(35, 70) - bd.Pos(0, 0, 3) * bd.Cylinder(33, 70)
    handle = bd.Pos(40, 0, 0) * bd.Rot(90, 0, 0) * bd.Torus(12, 3)
    cup = body + handle
    cup.label = "cup"
    validate_geometry(extract_geometry(cup, tessellation="coarse"), tessellation="coarse")


def test_geometry_meshed_with_another_setting_is_refused(bd: Any) -> None:
    geom = extract_geometry(bd.Box(10, 10, 10), tessellation="coarse")
    with pytest.raises(Failed, match="it was meshed with 'coarse', not 'fine'"):
        validate_geometry(geom, tessellation="fine")

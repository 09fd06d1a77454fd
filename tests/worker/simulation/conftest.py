"""Helpers to turn build123d shapes into a Scene in this process (trusted test code)."""

from __future__ import annotations

from typing import Any

import pytest

from common.models.simulation import Objectives, SimOptions
from worker.simulation.builder import Scene, build_scene
from worker.simulation.cad import extract_geometry
from worker.simulation.geometry import validate_geometry


def make_scene(
    shapes: Any,
    objectives: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    parts: dict[str, Any] | None = None,
) -> tuple[Scene, Objectives, SimOptions]:
    obj = Objectives.model_validate(objectives or {})
    opt = SimOptions.model_validate({"render": False, **(options or {})})
    geom = extract_geometry(shapes, parts, tessellation=opt.tessellation)
    validate_geometry(geom, tessellation=opt.tessellation)
    return build_scene(geom, obj, opt), obj, opt


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """MuJoCo writes MUJOCO_LOG.TXT into the working directory when a simulation diverges."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def scene_of() -> Any:
    """`scene_of(shapes, objectives=None, options=None, parts=None)` → (Scene, Objectives,
    SimOptions)."""
    return make_scene


@pytest.fixture(scope="session")
def bd() -> Any:
    """build123d, imported once per session (~2 s)."""
    import build123d

    return build123d

"""Every example under examples/, end to end through the real `simjail run --json` command.

Each example's documented outcome (README.md, "Writing a design") is asserted exactly, plus
physical facts that the metrics must show: a hinged part keeps its distance to its axis, a slide
moves only along its axis, a welded part moves with its parent, fixed parts stay put, masses
follow from materials. The runs are independent child processes (each imports build123d, ~2 s),
so the module runs the examples its selected tests need in a thread pool, all at once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SIMJAIL = Path(sys.executable).parent / "simjail"
RUN_TIMEOUT_S = 300

Vec = Sequence[float]
F = TypeVar("F", bound=Callable[..., Any])


# --- the examples and how each is run ---------------------------------------------------------


@dataclass(frozen=True)
class Example:
    design: str
    environment: str | None = None
    objectives: str | None = None
    options: str | None = None
    duration: float | None = None
    render: bool = False

    def argv(self, out: Path, request_id: str) -> list[str]:
        argv = [str(SIMJAIL), "run", str(EXAMPLES / self.design), "--json", "--out", str(out)]
        argv += ["--request-id", request_id]
        for flag, path in (
            ("--environment", self.environment),
            ("--objectives", self.objectives),
            ("--options", self.options),
        ):
            if path is not None:
                argv += [flag, str(EXAMPLES / path)]
        if self.duration is not None:
            argv += ["--duration", str(self.duration)]
        if not self.render:
            argv.append("--no-render")
        return argv


def _feature(name: str, **kw: Any) -> Example:
    return Example(
        design=f"features/{name}/design.py", options=f"features/{name}/options.yaml", **kw
    )


RUNS: dict[str, Example] = {
    "drop": Example("drop/design.py", objectives="drop/objectives.yaml"),
    # The same drop, stopped before the block can have held the goal for its second.
    "drop_short": Example("drop/design.py", objectives="drop/objectives.yaml", duration=0.8),
    "ramp": Example(
        "ramp/design.py", environment="ramp/environment.py", objectives="ramp/objectives.yaml"
    ),
    "forbid": Example(
        "forbid/design.py", environment="ramp/environment.py", objectives="forbid/objectives.yaml"
    ),
    # The same, rendered: the decisive moment, the contact sheet, the plots, report.html.
    "forbid_rendered": Example(
        "forbid/design.py",
        environment="ramp/environment.py",
        objectives="forbid/objectives.yaml",
        render=True,
    ),
    "arm": Example(
        "arm/design.py",
        environment="arm/environment.py",
        objectives="arm/objectives.yaml",
        options="arm/options.yaml",
    ),
    # The arm holds its result: a longer run than options.yaml's 5 s is still SUCCESS.
    "arm_long": Example(
        "arm/design.py",
        environment="arm/environment.py",
        objectives="arm/objectives.yaml",
        options="arm/options.yaml",
        duration=8.0,
    ),
    "parts": _feature("parts"),
    "materials": _feature("materials"),
    "fixed": _feature("fixed"),
    "hinge": _feature("hinge", render=True),  # the one rendered run
    "slide": _feature("slide"),
    "weld": _feature("weld"),
    "actuators": _feature("actuators"),
    "overload": _feature("overload"),
    "convex": _feature("convex"),
    "penetration": _feature("penetration"),
    "zones": _feature(
        "zones",
        environment="features/zones/environment.py",
        objectives="features/zones/objectives.yaml",
    ),
    "build_zone": _feature(
        "build_zone",
        environment="features/zones/environment.py",
        objectives="features/zones/objectives.yaml",
    ),
}


@dataclass(frozen=True)
class Run:
    name: str
    returncode: int
    result: dict[str, Any]
    stderr: str

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.result["metrics"]
        return metrics

    def part(self, label: str) -> dict[str, Any]:
        part: dict[str, Any] = self.metrics["parts"][label]
        return part

    def artifact(self, name: str) -> Path:
        url = self.result["artifact_urls"][name]
        assert url.startswith("file://"), url
        return Path(unquote(urlparse(url).path))

    def geometry(self) -> dict[str, dict[str, Any]]:
        geom = json.loads(self.artifact("geometry").read_text())
        return {p["label"]: p for p in geom["parts"]}

    def expect(self, outcome: str, failure: str | None) -> None:
        """The documented verdict, and an exit status that agrees with it."""
        got = (self.result["outcome"], self.result["failure"])
        assert got == (outcome, failure), f"{self.name}: {got}: {self.result['reason']}"
        assert self.returncode == (0 if outcome == "SUCCESS" else 1), self.stderr[-2000:]


def _run(name: str, example: Example, out: Path) -> Run:
    request_id = name.replace("_", "-")
    proc = subprocess.run(
        example.argv(out, request_id),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"{name}: exit {proc.returncode}, no JSON result on stdout:\n"
            f"{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return Run(name=name, returncode=proc.returncode, result=result, stderr=proc.stderr)


def uses(name: str) -> Callable[[F], F]:
    """Marks a test as needing the run `name`; only the runs of selected tests are started."""
    assert name in RUNS, name

    def mark(fn: F) -> F:
        fn.example_run = name  # type: ignore[attr-defined]
        return fn

    return mark


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Run]]]:
    needed = sorted(
        {
            name
            for item in request.session.items
            if (name := getattr(getattr(item, "function", None), "example_run", None))
        }
    )
    out = tmp_path_factory.mktemp("examples")
    # Each run is a few child processes, mostly the build123d import; two at a time keep a
    # 2-core machine busy without making each run slower than the time it saves.
    workers = max(2, min(4, (os.cpu_count() or 2)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="example")
    # Slowest first, so the pool does not end on a long run.
    order = sorted(needed, key=lambda n: (RUNS[n].environment is None, not RUNS[n].render))
    futures = {name: pool.submit(_run, name, RUNS[name], out) for name in order}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def get(runs: dict[str, Future[Run]], name: str) -> Run:
    return runs[name].result(timeout=RUN_TIMEOUT_S * 2)


# --- small geometry helpers (millimetres, quaternions w x y z) ---------------------------------


def sub(a: Vec, b: Vec) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def add(a: Vec, b: Vec) -> list[float]:
    return [x + y for x, y in zip(a, b, strict=True)]


def norm(a: Vec) -> float:
    return math.sqrt(sum(x * x for x in a))


def dot(a: Vec, b: Vec) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def rotate(q: Vec, v: Vec) -> list[float]:
    """v turned by the unit quaternion q = (w, x, y, z)."""
    w, x, y, z = q
    vx, vy, vz = v
    # t = 2 (q_vec × v); v' = v + w t + q_vec × t
    tx, ty, tz = 2 * (y * vz - z * vy), 2 * (z * vx - x * vz), 2 * (x * vy - y * vx)
    return [
        vx + w * tx + (y * tz - z * ty),
        vy + w * ty + (z * tx - x * tz),
        vz + w * tz + (x * ty - y * tx),
    ]


def close(a: Vec, b: Vec, tol: float) -> bool:
    return norm(sub(a, b)) <= tol


def inside(p: Vec, lo: Vec, hi: Vec) -> bool:
    return all(a <= c <= b for a, c, b in zip(lo, p, hi, strict=True))


def assert_unmoved(run: Run, *labels: str) -> None:
    for label in labels:
        p = run.part(label)
        assert p["final_position_mm"] == pytest.approx(p["initial_position_mm"], abs=1e-6), label
        assert p["final_quat"] == pytest.approx([1, 0, 0, 0], abs=1e-6), label
        assert p["max_speed_mm_s"] == 0.0, label


def steel_ball_kg(radius_mm: float) -> float:
    return 7800 * 4 / 3 * math.pi * radius_mm**3 * 1e-9


# --- the main examples ------------------------------------------------------------------------


@pytest.mark.slow
@uses("drop")
def test_drop_lands_on_the_pad(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "drop")
    run.expect("SUCCESS", None)
    block = run.part("block")
    assert block["mass_kg"] == pytest.approx(2700 * 60**3 * 1e-9)  # aluminium
    # Resting on the floor, on its 60 mm face, where it was dropped.
    assert block["final_position_mm"] == pytest.approx([0, 0, 30], abs=0.5)
    assert run.metrics["goal"]["reached"]
    assert run.metrics["goal"]["hold_s"] >= 1.0


@pytest.mark.slow
@uses("drop_short")
def test_drop_stopped_early_has_not_held_the_goal(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "drop_short")
    run.expect("FAIL", "GOAL_NOT_REACHED")
    goal = run.metrics["goal"]
    # It got there, but 0.8 s of simulation cannot hold a goal for 1 s.
    assert goal["reached"] and goal["min_distance_mm"] == 0.0
    assert 0.0 < goal["hold_s"] < 0.8
    assert run.metrics["sim_time_s"] == pytest.approx(0.8)


@pytest.mark.slow
@uses("ramp")
def test_ramp_ball_rolls_into_the_goal(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "ramp")
    run.expect("SUCCESS", None)
    ball = run.part("ball")
    assert ball["mass_kg"] == pytest.approx(steel_ball_kg(20), rel=1e-3)
    assert inside(ball["final_position_mm"], (250, -100, 0), (510, 100, 100))
    assert ball["final_position_mm"][2] == pytest.approx(20, abs=1)  # on the floor
    assert ball["initial_position_mm"][2] > 100  # it came down the ramp
    assert_unmoved(run, "ramp", "wall")
    assert run.part("ramp")["mass_kg"] == pytest.approx(500 * 400 * 120 * 10 * 1e-9)  # pine


@pytest.mark.slow
@uses("forbid")
def test_forbid_ball_crosses_the_pit(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "forbid")
    run.expect("FAIL", "FORBID_ZONE_HIT")
    assert "'ball'" in run.result["reason"] and "'pit'" in run.result["reason"]
    decided = run.metrics["runs"][0]["decided_at_s"]
    assert 0.3 < decided < 1.5  # on its way down, not at t = 0
    # The ball went on into the goal: a forbid zone fails the run whatever happens after.
    assert inside(run.part("ball")["final_position_mm"], (250, -100, 0), (510, 100, 100))
    assert_unmoved(run, "ramp", "wall")


def _check_arm(run: Run) -> None:
    run.expect("SUCCESS", None)
    block, arm = run.part("block"), run.part("arm")
    # The block was swept a quarter turn about the pedestal into the goal, on the floor.
    p0, p1 = block["initial_position_mm"], block["final_position_mm"]
    assert inside(p1, (-150, 120, 0), (10, 260, 60))
    assert p1[2] == pytest.approx(20, abs=1)
    turned = math.degrees(math.atan2(p1[1], p1[0]) - math.atan2(p0[1], p0[0]))
    assert turned > 75
    # The arm turned only about its vertical hinge through the origin: a pure z rotation, its
    # centre of mass at the same height and the same distance from the axis.
    w, x, y, z = arm["final_quat"]
    assert abs(x) < 1e-3 and abs(y) < 1e-3
    arm_deg = math.degrees(2 * math.atan2(z, w))
    assert 80 < arm_deg < 105  # commanded 100°, less a little proportional-servo error
    a0, a1 = arm["initial_position_mm"], arm["final_position_mm"]
    assert a1[2] == pytest.approx(a0[2], abs=0.2)
    assert math.hypot(a1[0], a1[1]) == pytest.approx(math.hypot(a0[0], a0[1]), abs=0.2)
    assert rotate(arm["final_quat"], a0) == pytest.approx(a1, abs=0.3)
    volume_mm3 = 40 * 40 * 20 + 210 * 16 * 20 + 110 * 16 * 36  # hub, beam, paddle
    assert arm["mass_kg"] == pytest.approx(1240 * volume_mm3 * 1e-9)  # PLA's density
    assert_unmoved(run, "pedestal")


@pytest.mark.slow
@uses("arm")
def test_arm_sweeps_the_block_into_the_goal(runs: dict[str, Future[Run]]) -> None:
    _check_arm(get(runs, "arm"))


@pytest.mark.slow
@uses("arm_long")
def test_arm_result_holds_over_a_longer_run(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "arm_long")
    _check_arm(run)
    assert run.metrics["sim_time_s"] == pytest.approx(8.0)


# --- features (README.md) ----------------------------------------------------------------------


@pytest.mark.slow
@uses("parts")
def test_parts_labels_generated_names_and_colours(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "parts")
    run.expect("SUCCESS", None)
    assert set(run.metrics["parts"]) == {"red_block", "blue_block", "part_2"}
    geom = run.geometry()
    assert geom["red_block"]["color"] == pytest.approx([1, 0, 0, 1])
    assert geom["blue_block"]["color"] == pytest.approx([0.1, 0.3, 0.9, 1])
    assert geom["part_2"]["color"] is not None  # from the palette
    assert all(p["source"] == "design" for p in geom.values())
    # Leaves are placed at their global location, and free blocks on the floor stay put.
    for label, x in (("red_block", -80), ("blue_block", 0), ("part_2", 80)):
        assert run.part(label)["initial_position_mm"] == pytest.approx([x, 0, 20], abs=1e-6)
        assert run.part(label)["final_position_mm"] == pytest.approx([x, 0, 20], abs=0.5)


@pytest.mark.slow
@uses("materials")
def test_materials_give_density_and_mass(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "materials")
    run.expect("SUCCESS", None)
    volume_m3 = 50**3 * 1e-9
    for label, density in (
        ("aluminum", 2700),  # build123d material
        ("steel", 7800),  # build123d material "mild_steel"
        ("wet_pine", 900),  # PARTS density overrides the material's 500
        ("plain", 1000),  # neither: the default
    ):
        assert run.part(label)["mass_kg"] == pytest.approx(density * volume_m3, rel=1e-6), label
    geom = run.geometry()
    assert geom["wet_pine"]["material_density"] == 500  # the material is still recorded
    assert geom["plain"]["material"] is None
    assert geom["steel"]["color"] == pytest.approx([0.35, 0.35, 0.4, 1])  # set after material


@pytest.mark.slow
@uses("fixed")
def test_fixed_part_holds_while_free_parts_fall(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "fixed")
    run.expect("SUCCESS", None)
    assert_unmoved(run, "shelf")
    # Resting on the shelf's top face (z = 100) ...
    assert run.part("on_shelf")["final_position_mm"] == pytest.approx([0, 0, 120], abs=0.5)
    # ... while the block beside it fell straight down to the floor.
    assert run.part("falling")["final_position_mm"] == pytest.approx([150, 0, 20], abs=0.5)
    assert run.part("falling")["max_speed_mm_s"] > 1000


@pytest.mark.slow
@uses("hinge")
def test_hinge_double_pendulum(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "hinge")
    run.expect("SUCCESS", None)
    upper, lower = run.part("upper"), run.part("lower")
    anchor1, anchor2 = [0.0, 0.0, 400.0], [200.0, 0.0, 400.0]
    for p in (upper, lower):
        _, x, _, z = p["final_quat"]
        assert abs(x) < 1e-4 and abs(z) < 1e-4  # turned about y only
        assert p["final_position_mm"][1] == pytest.approx(0, abs=1e-3)  # stays in its plane
    # `upper` turns about the fixed anchor: its centre of mass keeps its 100 mm to it, and its
    # displacement is its orientation applied about the anchor.
    u0, u1 = upper["initial_position_mm"], upper["final_position_mm"]
    assert norm(sub(u1, anchor1)) == pytest.approx(100, abs=0.1)
    assert add(anchor1, rotate(upper["final_quat"], sub(u0, anchor1))) == pytest.approx(u1, abs=0.2)
    # `lower` turns about the joint between the two, which `upper` carries along.
    joint = add(u1, rotate(upper["final_quat"], sub(anchor2, u0)))
    l0, l1 = lower["initial_position_mm"], lower["final_position_mm"]
    assert norm(sub(l1, joint)) == pytest.approx(75, abs=0.1)
    assert add(joint, rotate(lower["final_quat"], sub(l0, anchor2))) == pytest.approx(l1, abs=0.2)
    # Damped, both come to rest hanging straight down: a +90° turn about +y.
    assert u1 == pytest.approx([0, 0, 300], abs=1)
    assert l1 == pytest.approx([0, 0, 125], abs=1)
    half = math.sqrt(0.5)
    assert upper["final_quat"] == pytest.approx([half, 0, half, 0], abs=1e-3)
    assert lower["final_quat"] == pytest.approx([half, 0, half, 0], abs=1e-3)


@pytest.mark.slow
@uses("hinge")
def test_rendered_run_writes_a_video(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "hinge")
    video = run.artifact("video")
    assert run.result["video_url"] == run.result["artifact_urls"]["video"]
    data = video.read_bytes()
    assert len(data) > 10_000
    assert data[4:8] == b"ftyp"  # an MP4 container
    assert run.artifact("poster").stat().st_size > 0
    assert run.metrics["frames"] == 90  # 3 s at 30 fps
    assert run.metrics["phases_s"]["render"] > 0


@pytest.mark.slow
@uses("forbid_rendered")
def test_a_rendered_fail_shows_its_decisive_moment(runs: dict[str, Future[Run]]) -> None:
    """The ball touches the pit at ~0.7 s: the poster is that moment, the video ends a second
    later, and every result artifact is there, report.html with its images inside."""
    run = get(runs, "forbid_rendered")
    run.expect("FAIL", "FORBID_ZONE_HIT")
    (nominal,) = run.metrics["runs"]
    assert nominal["culprits"] == ["ball"]
    decided = nominal["decided_at_s"]
    assert 0.6 < decided < 0.8
    assert nominal["events"][0] == {
        "t_s": pytest.approx(decided),
        "rule": "FORBID_ZONE_HIT",
        "parts": ["ball"],
        "reason": run.result["reason"],
        "decisive": True,
    }
    assert run.metrics["frames"] == math.floor((decided + 1.0) * 30 + 1e-9) + 1
    assert run.metrics["sim_time_s"] == pytest.approx(10.0)  # the simulation ran on
    for name, magic in (
        ("poster", b"\x89PNG"),
        ("contact_sheet", b"\x89PNG"),
        ("last_frame", b"\x89PNG"),
        ("plots", b"<svg "),
        ("report_html", b"<!DOCTYPE html>"),
    ):
        assert run.artifact(name).read_bytes().startswith(magic), name
    assert run.artifact("poster").read_bytes() != run.artifact("last_frame").read_bytes()
    page = run.artifact("report_html").read_text()
    assert "<h1>FAIL — FORBID_ZONE_HIT</h1>" in page
    assert page.count('src="data:image/') == 3 and 'src="data:video/mp4;base64,' in page


@pytest.mark.slow
@uses("slide")
def test_slide_moves_only_along_its_axis(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "slide")
    run.expect("SUCCESS", None)
    carriage, rider = run.part("carriage"), run.part("rider")
    axis = [2 / math.sqrt(5), 0.0, -1 / math.sqrt(5)]
    moved = sub(carriage["final_position_mm"], carriage["initial_position_mm"])
    # Along the axis only, to the end of its 0..150 mm travel, and never turned.
    assert dot(moved, axis) == pytest.approx(150, abs=1)
    assert norm(sub(moved, [dot(moved, axis) * a for a in axis])) < 0.01
    assert carriage["final_quat"] == pytest.approx([1, 0, 0, 0], abs=1e-6)
    # The rider moved with the carriage, and 40 mm down its own vertical travel.
    rider_moved = sub(rider["final_position_mm"], rider["initial_position_mm"])
    assert rider_moved == pytest.approx(add(moved, [0, 0, -40]), abs=1)
    assert rider["final_quat"] == pytest.approx([1, 0, 0, 0], abs=1e-6)


@pytest.mark.slow
@uses("weld")
def test_weld_child_moves_with_its_parent(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "weld")
    run.expect("SUCCESS", None)
    beam, weight = run.part("beam"), run.part("weight")
    # The beam swung down about its hinge (it is hanging at rest by now) ...
    assert beam["final_quat"] == pytest.approx([math.sqrt(0.5), 0, math.sqrt(0.5), 0], abs=1e-3)
    # ... and the welded weight turned with it and kept its offset in the beam's frame.
    assert weight["final_quat"] == pytest.approx(beam["final_quat"], abs=1e-6)
    offset0 = sub(weight["initial_position_mm"], beam["initial_position_mm"])
    offset1 = sub(weight["final_position_mm"], beam["final_position_mm"])
    assert offset1 == pytest.approx(rotate(beam["final_quat"], offset0), abs=0.05)
    assert weight["final_position_mm"] == pytest.approx([0, 0, 300 - 215], abs=1)
    assert weight["mass_kg"] == pytest.approx(8500 * 30**3 * 1e-9)  # brass, its own part
    # Welded to the world: it floats where it was built.
    assert_unmoved(run, "sign")


@pytest.mark.slow
@uses("actuators")
def test_actuators_follow_their_controls(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "actuators")
    run.expect("SUCCESS", None)
    mass = run.part("pushed")["mass_kg"]
    assert mass == pytest.approx(2700 * 40**3 * 1e-9)
    t = run.metrics["sim_time_s"]
    expected_x = {
        "pushed": 0.5 * (0.01 / mass) * t**2 * 1000,  # motor: constant 0.01 N, x = F t² / 2m
        "servo": 80.0,  # position servo: step to 80 mm at 0.5 s, settled by 2 s
        "cruiser": 80.0,  # velocity servo: mean speed 40 mm/s over two whole sine periods
    }
    tolerance = {"pushed": 1.0, "servo": 0.5, "cruiser": 2.0}
    for label, y in (("pushed", -100), ("servo", 0), ("cruiser", 100)):
        p = run.part(label)
        x1 = p["final_position_mm"]
        assert x1[0] == pytest.approx(expected_x[label], abs=tolerance[label]), label
        assert x1[1:] == pytest.approx([y, 100], abs=1e-3), label  # only along the slide
        assert p["final_quat"] == pytest.approx([1, 0, 0, 0], abs=1e-6), label


@pytest.mark.slow
@uses("overload")
def test_weak_servo_overloads(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "overload")
    run.expect("FAIL", "MOTOR_OVERLOAD")
    assert "'bar'" in run.result["reason"]
    # Saturated from the start, it fails once it has been at its limit for overload_s = 0.5 s.
    assert 0.5 <= run.metrics["runs"][0]["decided_at_s"] <= 0.6
    w, _, y, _ = run.part("bar")["final_quat"]
    assert math.degrees(2 * math.atan2(y, w)) > 30  # the bar sagged: the servo could not hold it


@pytest.mark.slow
@uses("convex")
def test_concave_solid_collides_as_its_shape(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "convex")
    run.expect("SUCCESS", None)
    assert_unmoved(run, "solid_cup", "split_cup")
    # Same shape, same mass: the split is only a matter of collision.
    assert run.part("solid_cup")["mass_kg"] == pytest.approx(run.part("split_cup")["mass_kg"])
    # One solid, decomposed by CoACD: the ball drops in and rests on the 8 mm floor (as the
    # hull, it rested on the lid, level with the 60 mm rim).
    assert 27.5 < run.part("ball_in_solid_cup")["final_position_mm"][2] < 30.5
    # Five box solids (MuJoCo boxes): the ball rests on the 8 mm floor.
    assert run.part("ball_in_split_cup")["final_position_mm"][2] == pytest.approx(28, abs=1)
    collision = run.metrics["collision"]
    # Computed, or taken from an earlier run's cache (the worker's data dir outlives runs).
    assert collision["coacd"] + collision["cached"] == 1 and collision["primitive"] >= 5


@pytest.mark.slow
@uses("penetration")
def test_overlapping_parts_fail_at_start(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "penetration")
    run.expect("FAIL", "INITIAL_PENETRATION")
    assert "'left'" in run.result["reason"] and "'right'" in run.result["reason"]
    assert "5.0 mm" in run.result["reason"]
    assert run.metrics["runs"][0]["decided_at_s"] == 0.0


@pytest.mark.slow
@uses("zones")
def test_zones_ball_deflected_past_the_pit_into_the_goal(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "zones")
    run.expect("SUCCESS", None)
    ball = run.part("ball")
    assert run.geometry()["ball"]["source"] == "environment"  # the target may be the task's
    assert inside(ball["final_position_mm"], (200, -100, 0), (380, 100, 100))
    assert ball["final_position_mm"][2] == pytest.approx(20, abs=1)
    assert run.metrics["goal"]["reached"] and run.metrics["goal"]["hold_s"] >= 1.0
    assert_unmoved(run, "deflector", "backstop")


@pytest.mark.slow
@uses("build_zone")
def test_part_outside_the_build_zone_fails_at_start(runs: dict[str, Future[Run]]) -> None:
    run = get(runs, "build_zone")
    run.expect("FAIL", "BUILD_ZONE_VIOLATION")
    assert "'backstop'" in run.result["reason"] and "workspace" in run.result["reason"]
    assert run.metrics["runs"][0]["decided_at_s"] == 0.0


# --- bookkeeping: every example is run here and documented -------------------------------------


def _example_dirs() -> set[str]:
    dirs = {p.parent for p in EXAMPLES.rglob("design.py")}
    return {str(d.relative_to(EXAMPLES)) for d in dirs}


def test_every_example_is_run() -> None:
    covered = {str(Path(e.design).parent) for e in RUNS.values()}
    assert covered == _example_dirs()
    tested = {getattr(obj, "example_run", "") for obj in globals().values() if callable(obj)}
    assert tested - {""} == set(RUNS)


def test_every_example_is_documented() -> None:
    docs = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted(d for d in _example_dirs() if f"examples/{d}" not in docs)
    assert not missing, f"examples not mentioned in the README: {missing}"

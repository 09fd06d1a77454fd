"""Ways a design once turned a task that should fail into SUCCESS, each next to its honest twin
(the same design without the trick, which must still fail, or pass, for the right reason).

- physics it claims: a forged inertia;
- energy hidden in a joint limit that excludes the starting pose;
- an actuator that acts without a control, or beyond the task's caps;
- a joint that switched off the task's obstacles;
- contacts MuJoCo dropped when its arena overflowed (a sealed vault fell open);
- a design label passing for the task's parts, a target that cannot move;
- a part too fast for the checks between two of them, a target or a part whirling round a
  hinge so that each step shows it where it should be, the state the run ends in;
- a motor held just under its force limit, a request driving the task's own actuator, a design
  hung on joints to escape the jitter, a target locked by a joint, labels that spell our names,
  a lattice whose contacts overflow MuJoCo's arena.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

# A forged frame: a 200 mm rod tilted 15° about x, resting on one bottom edge, with whatever
# inertia the forger claims (the honest one is the box's tensor, turned).
FORGE = """
import base64, json, math, os, struct, sys
import numpy as np
FD = int(sys.argv[sys.argv.index("--frame-fd") + 1])
TRIANGLES = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
def b64(a, dtype):
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()
def send_rod(factor):
    a, b, c = 10.0, 10.0, 200.0
    local = np.array([[x, y, z] for x in (-a/2, a/2) for y in (-b/2, b/2) for z in (-c/2, c/2)])
    th = math.radians(15)
    rot = np.array([[1, 0, 0], [0, math.cos(th), -math.sin(th)], [0, math.sin(th), math.cos(th)]])
    v = local @ rot.T
    lift = -v[:, 2].min()
    v[:, 2] += lift
    vol = a * b * c
    tensor = rot @ np.diag([vol * (b*b + c*c) / 12, vol * (a*a + c*c) / 12,
                            vol * (a*a + b*b) / 12]) @ rot.T * factor
    part = {"label": "rod", "source": "design", "volume_mm3": vol, "com_mm": [0.0, 0.0, lift],
            "inertia_mm5": [tensor[0, 0], tensor[1, 1], tensor[2, 2],
                            tensor[0, 1], tensor[0, 2], tensor[1, 2]],
            "solids": [{"vertices": b64(v, "<f4"), "triangles": b64(np.array(TRIANGLES), "<i4")}]}
    body = json.dumps({"type": "result", "payload": {"parts": [part]}}).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(FD, data):]
    os._exit(0)
"""


def _rod(run_design: RunDesign, factor: float) -> SimulationResult:
    return run_design(
        FORGE + f"\ndef build():\n    send_rod({factor})\n", options={"duration_s": 1.5}
    )


@pytest.mark.parametrize("factor", [4.0, 0.25])
def test_a_forged_inertia_is_not_believed(run_design: RunDesign, factor: float) -> None:
    """4× what a 200 mm rod can have once kept it standing twice as long, and the task passed.
    The physics takes the inertia from the mesh where the claim disagrees with it: the forged
    rod topples exactly as the honest one."""
    forged, honest = _rod(run_design, factor), _rod(run_design, 1.0)
    assert forged.outcome == honest.outcome == "SUCCESS", (forged.reason, honest.reason)
    f, h = forged.metrics["parts"]["rod"], honest.metrics["parts"]["rod"]
    assert f["final_quat"] == h["final_quat"]
    assert f["final_position_mm"] == h["final_position_mm"]
    assert abs(h["final_quat"][1]) > 0.5  # it really fell over: well past 60°


SLIDE_KICK = """
from build123d import Box, Compound, Pos
PARTS = {{
    "kicker": {{"joint": {{"type": "slide", "axis": (1, 0, 0), "range": {range}}}}},
}}
def build():
    kicker = Pos(0, 0, 10) * Box(20, 20, 20)
    kicker.label = "kicker"
    return kicker
"""


def test_a_joint_range_that_excludes_the_start_is_refused(run_design: RunDesign) -> None:
    """A slide whose range (80, 81) mm excluded its start snapped 80 mm within ~20 ms."""
    r = run_design(textwrap.dedent(SLIDE_KICK.format(range=(80, 81))))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'kicker': its slide joint's range (80, 81) mm "
        "does not contain its starting position, 0 mm."
    )


def test_honest_twin_a_range_holding_the_start_is_simulated(run_design: RunDesign) -> None:
    r = run_design(textwrap.dedent(SLIDE_KICK.format(range=(-1, 81))))
    assert r.outcome == "SUCCESS", r.reason
    end = r.metrics["parts"]["kicker"]["final_position_mm"]
    assert abs(end[0]) < 1  # nothing pushed it


def test_a_hinge_range_that_excludes_the_start_is_refused(run_design: RunDesign) -> None:
    code = """
    from build123d import Box, Pos
    PARTS = {"flap": {"joint": {"type": "hinge", "axis": (0, 0, 1), "range": (30, 90)}}}
    def build():
        flap = Pos(0, 0, 10) * Box(40, 4, 20)
        flap.label = "flap"
        return flap
    """
    r = run_design(textwrap.dedent(code))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert "hinge joint's range (30, 90)° does not contain its starting position, 0°" in r.reason


PUSHER = """
from build123d import Box, Compound, Pos
PARTS = {{
    "pusher": {{"density": 5000, "joint": {{"type": "slide", "axis": (1, 0, 0),
               "range": (-5, 300), "actuator": {actuator}}}}},
    "target": {{"density": 5000}},
}}
def build():
    pusher = Pos(0, 0, 10) * Box(20, 20, 20)
    pusher.label = "pusher"
    target = Pos(40, 0, 10) * Box(20, 20, 20)
    target.label = "target"
    return Compound(children=[pusher, target])
"""
GOAL = {
    "target": "target",
    "goal_hold_s": 0.3,
    "zones": [{"name": "home", "kind": "goal", "min": [60, -50, 0], "max": [2000, 50, 100]}],
}


def _push(actuator: dict[str, Any]) -> str:
    return textwrap.dedent(PUSHER.format(actuator=actuator))


def test_an_actuator_without_a_control_exerts_nothing(run_design: RunDesign) -> None:
    """A ctrl range that excludes 0 made MuJoCo clamp the missing control into it: the motor
    pushed the target home with no control at all."""
    motor = {"kind": "motor", "ctrl_range": (0.5, 1), "force_limit": 10}
    r = run_design(_push(motor), objectives=GOAL, options={"duration_s": 2.0})
    assert r.failure == FailureKind.GOAL_NOT_REACHED, r.reason
    assert abs(r.metrics["parts"]["pusher"]["final_position_mm"][0]) < 1


def test_honest_twin_the_controlled_actuator_pushes_the_target_home(run_design: RunDesign) -> None:
    motor = {"kind": "motor", "ctrl_range": (0.5, 1), "force_limit": 10}
    r = run_design(
        _push(motor),
        objectives=GOAL,
        options={
            "duration_s": 2.0,
            "controls": [{"actuator": "pusher", "kind": "constant", "value": 0.5}],
        },
    )
    assert r.outcome == "SUCCESS", r.reason


@pytest.mark.parametrize(
    ("actuator", "what"),
    [
        (
            {"kind": "motor", "force_limit": 1e6},
            "force_limit 1e+06 is above the task's cap of 1000",
        ),
        ({"kind": "motor", "overload_s": 3600}, "overload_s 3600 is above the task's cap of 2"),
        ({"kind": "position", "kp": 1e7}, "kp 1e+07 is above the task's cap of 10000"),
        ({"kind": "motor", "ctrl_range": (0, 1e9)}, "ctrl_range 1e+09 is above the task's cap"),
    ],
)
def test_an_actuator_beyond_the_tasks_caps_is_refused(
    run_design: RunDesign, actuator: dict[str, Any], what: str
) -> None:
    """An overload time of an hour would switch MOTOR_OVERLOAD off; a million newtons win any
    task."""
    r = run_design(_push(actuator), objectives=GOAL)
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert f"part 'pusher': its actuator's {what}" in r.reason


def test_honest_twin_a_task_may_raise_its_caps(run_design: RunDesign) -> None:
    motor = {"kind": "motor", "force_limit": 5000.0}
    r = run_design(
        _push(motor),
        objectives={**GOAL, "actuator_caps": {"max_force": 10_000}},
        options={"controls": [{"actuator": "pusher", "kind": "constant", "value": 5}]},
    )
    assert r.failure != FailureKind.INVALID_GEOMETRY, r.reason


WALL = """
from build123d import Box, Pos
PARTS = {"wall": {"fixed": True}}
def build():
    wall = Pos(100, 0, 50) * Box(40, 200, 100)
    wall.label = "wall"
    return wall
"""
PROBE = """
from build123d import Box, Pos
PARTS = {{"probe": {{"joint": {{"type": "slide", "parent": "{parent}", "axis": (1, 0, 0),
          "range": (-10, 400), "actuator": {{"kind": "motor", "force_limit": 0.5}}}}}}}}
def build():
    probe = Pos(0, 0, 50) * Box(20, 20, 20)
    probe.label = "probe"
    return probe
"""
BEHIND_THE_WALL = {
    "target": "probe",
    "goal_hold_s": 0.3,
    "zones": [{"name": "behind", "kind": "goal", "min": [150, -50, 0], "max": [450, 50, 150]}],
}


def _probe(run_design: RunDesign, parent: str) -> SimulationResult:
    return run_design(
        textwrap.dedent(PROBE.format(parent=parent)),
        environment={"code": textwrap.dedent(WALL)},
        objectives=BEHIND_THE_WALL,
        options={
            "duration_s": 2.0,
            "controls": [{"actuator": "probe", "kind": "constant", "value": 0.5}],
        },
    )


def test_a_joint_to_the_tasks_wall_is_refused(run_design: RunDesign) -> None:
    """Slide-jointed to the task's wall, a probe once slid through it into the goal: a child
    body never collided with its parent. A design joints only to the world or to its own
    parts."""
    r = _probe(run_design, "wall")
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'probe' is jointed to environment part 'wall': "
        'parts may be jointed only to "world" or to parts of their own design (it is fixed: '
        'joint to "world" instead, with the same anchor).'
    )


def test_honest_twin_jointed_to_the_world_the_probe_stops_at_the_wall(
    run_design: RunDesign,
) -> None:
    r = _probe(run_design, "world")
    assert r.failure in (FailureKind.GOAL_NOT_REACHED, FailureKind.MOTOR_OVERLOAD), r.reason
    assert r.metrics["parts"]["probe"]["final_position_mm"][0] < 75  # stopped at the wall (x 80)


# --- the arena ------------------------------------------------------------------------------

VAULT_OBJECTIVES = {
    "target": "gem",
    "goal_hold_s": 0.05,  # the gem falls through the goal too (the ground drops it as well)
    "zones": [{"name": "below", "kind": "goal", "min": [-40, -40, 0], "max": [40, 40, 90]}],
}


def _vault(monkeypatch: pytest.MonkeyPatch, arena: int | None) -> SimulationResult:
    """A gem on the fixed floor of a vault 100 mm above the goal, beside pebbles. With an arena
    too small for the scene's contacts MuJoCo drops them for the step and warns, and the gem
    falls through the floor into the goal. (The arena is sized for the scene, so a design can
    no longer make it overflow at will; the test makes it small instead, in-process.)"""
    from build123d import Box, Pos, Sphere

    from common.models.simulation import Objectives, SimOptions
    from worker.simulation import builder
    from worker.utils.simulation import simulate_local

    if arena is not None:
        monkeypatch.setattr(builder, "arena_bytes", lambda geoms, dofs: arena)
    floor = Pos(0, 0, 105) * Box(100, 100, 10)
    floor.label = "vault"
    gem = Pos(0, 0, 115.5) * Sphere(5)
    gem.label = "gem"
    pebbles = []  # more contacts on the vault floor beside the gem
    for i in range(16):
        b = Pos(-30 + 20 * (i % 4), -30 + 20 * (i // 4), 112.5) * Box(4, 4, 4)
        b.label = f"pebble{i}"
        pebbles.append(b)
    pebbles = [p for p in pebbles if abs(p.center().X) + abs(p.center().Y) > 15]
    return simulate_local(
        [floor, gem, *pebbles],
        SimOptions(render=False, duration_s=1.0),
        Objectives.model_validate(VAULT_OBJECTIVES),
        parts={"vault": {"fixed": True}},
    )


def test_contacts_dropped_by_a_full_arena_fail_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _vault(monkeypatch, 40_000)
    assert r.failure == FailureKind.PHYSICS_INSTABILITY
    assert r.reason.startswith("The simulation is invalid at t="), r.reason
    assert "mjWARN_CONTACTFULL" in r.reason


def test_honest_twin_the_sealed_gem_stays_in_its_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _vault(monkeypatch, None)
    assert r.failure == FailureKind.GOAL_NOT_REACHED, r.reason
    assert r.metrics["mujoco_warnings"] == {}
    assert r.metrics["parts"]["gem"]["final_position_mm"][2] > 100


# --- labels and the target ------------------------------------------------------------------

GEM_TASK = """
from build123d import Box, Pos, Sphere
PARTS = {"stand": {"fixed": True}}
def build():
    stand = Pos(300, 0, 10) * Box(40, 40, 20)
    stand.label = "stand"
    gem = Pos(300, 0, 30) * Sphere(10)
    gem.label = "gem"
    return [stand, gem]
"""
GEM_OBJECTIVES = {
    "target": "gem",
    "goal_hold_s": 0.3,
    "zones": [
        {"name": "goal", "kind": "goal", "min": [250, -50, 0], "max": [350, 50, 100]},
        {"name": "pit", "kind": "forbid", "min": [-60, -60, 0], "max": [60, 60, 3]},
    ],
}


def _labelled(label: str) -> str:
    return f"""
from build123d import Box, Pos
def build():
    b = Pos(0, 0, 50) * Box(20, 20, 20)  # dropped into the pit
    b.label = {label!r}
    return b
"""


@pytest.mark.parametrize("label", ["Gem", "GEM", "ｇｅｍ"])
def test_a_design_label_shadowing_the_tasks_target_is_refused(
    run_design: RunDesign, label: str
) -> None:
    """'Gem' beside the task's 'gem' would read as the target in every message. (A full-width
    'ｇｅｍ' is no label at all: labels are [A-Za-z0-9_.:-].)"""
    r = run_design(_labelled(label), environment={"code": GEM_TASK}, objectives=GEM_OBJECTIVES)
    assert r.failure == FailureKind.INVALID_GEOMETRY
    if label.isascii():
        assert r.reason == (
            f"The geometry was rejected: design part {label!r} takes the label of environment "
            "part 'gem' (labels are compared case-folded and NFKC-normalised): a design may not "
            "name or shadow the task's parts."
        )
    assert "Part 'gem'" not in r.reason


def test_a_decoy_label_is_never_reported_as_the_tasks_part(run_design: RunDesign) -> None:
    """A design part 'gem__decoy' that hit the pit was once reported as the task's 'gem'."""
    r = run_design(
        _labelled("gem__decoy"), environment={"code": GEM_TASK}, objectives=GEM_OBJECTIVES
    )
    assert r.failure == FailureKind.FORBID_ZONE_HIT
    assert r.reason.startswith("Part 'gem__decoy' touched the forbidden zone 'pit' at t=")
    assert r.metrics["runs"][0]["culprits"] == ["gem__decoy"]
    assert r.metrics["parts"]["gem__decoy"]["source"] == "design"
    assert r.metrics["parts"]["gem"]["source"] == "environment"


def test_honest_twin_the_tasks_own_part_is_named_as_the_environments(
    run_design: RunDesign,
) -> None:
    r = run_design(_labelled("pusher"), environment={"code": GEM_TASK}, objectives=GEM_OBJECTIVES)
    assert r.failure == FailureKind.FORBID_ZONE_HIT  # the pusher fell into the pit
    assert r.reason.startswith("Part 'pusher' touched the forbidden zone 'pit'")


@pytest.mark.parametrize(
    "meta",
    [{"fixed": True}, {"joint": {"type": "weld"}}],
    ids=["fixed", "welded-to-the-world"],
)
def test_a_target_that_cannot_move_is_refused(run_design: RunDesign, meta: dict[str, Any]) -> None:
    """A target fixed in place inside the goal would "hold" it from t=0."""
    code = f"""
from build123d import Box, Pos
PARTS = {{"gem": {meta!r}}}
def build():
    gem = Pos(300, 0, 30) * Box(20, 20, 20)
    gem.label = "gem"
    return gem
"""
    objectives = {**GEM_OBJECTIVES, "zones": GEM_OBJECTIVES["zones"][:1]}
    r = run_design(code, objectives=objectives)
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: the task's target, design part 'gem', cannot move (it is "
        "fixed, welded or held by joint ranges that let its centre of mass travel less than "
        "0.1 mm), so it cannot be brought to the goal."
    )


def test_honest_twin_a_free_target_in_the_goal_holds_it(run_design: RunDesign) -> None:
    code = """
from build123d import Box, Pos
def build():
    gem = Pos(300, 0, 10) * Box(20, 20, 20)
    gem.label = "gem"
    return gem
"""
    objectives = {**GEM_OBJECTIVES, "zones": GEM_OBJECTIVES["zones"][:1]}
    r = run_design(code, objectives=objectives)
    assert r.failure is None, r.reason


def test_a_part_labelled_world_is_refused(run_design: RunDesign) -> None:
    """ "world" is what a joint's parent names for the world; MuJoCo once crashed on it."""
    r = run_design(_labelled("world"))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'world': the label 'world' is reserved."
    )


# --- speed ----------------------------------------------------------------------------------

SHEET = {"zones": [{"name": "sheet", "kind": "forbid", "min": [-200, -200, 100],
                    "max": [200, 200, 101]}]}  # fmt: skip


def _dropped_ball(run_design: RunDesign, height_mm: float, zone: dict[str, Any]) -> Any:
    code = f"""
from build123d import Pos, Sphere
def build():
    ball = Pos(0, 0, {height_mm}) * Sphere(2)
    ball.label = "ball"
    return ball
"""
    return run_design(code, objectives=zone, options={"duration_s": 1.5})


@pytest.mark.parametrize("height_mm", [1200, 5000])
def test_a_part_too_fast_for_the_checks_still_touches_a_thin_zone(
    run_design: RunDesign, height_mm: float
) -> None:
    """Dropped from 1.2 m a ball passed a 1 mm forbid zone between two 10 ms checks; from 5 m
    (9.8 m/s, 20 mm per 2 ms step) it passes it within one step."""
    r = _dropped_ball(run_design, height_mm, SHEET)
    assert r.failure == FailureKind.FORBID_ZONE_HIT, r.reason
    assert r.reason.startswith("Part 'ball' touched the forbidden zone 'sheet' at t=")


def test_honest_twin_a_fast_part_passing_beside_a_thin_zone_is_clear(
    run_design: RunDesign,
) -> None:
    beside = {"zones": [{"name": "sheet", "kind": "forbid", "min": [3, -200, 50],
                         "max": [4, 200, 4000]}]}  # fmt: skip
    r = _dropped_ball(run_design, 5000, beside)  # 1 mm from the ball all the way down
    assert r.failure is None, r.reason


# --- between two steps ------------------------------------------------------------------------

# A ball on a 50 mm arm, spun by a velocity servo about a vertical hinge. At 3143.34 rad/s it
# turns 360.2° per 2 ms step (157 m/s): every step shows it 0.2° on from the last, creeping
# round at 1.745 rad/s, while it really circles the hinge once per step. The honest twin spins
# at that creep.
WHIRL = """
from build123d import Box, Compound, Pos, Sphere
PARTS = {{"ball": {{"joint": {{"type": "hinge", "axis": (0, 0, 1), "anchor": (0, 0, 100),
          "actuator": {{"kind": "velocity", "kv": 0.002, "force_limit": 10}}}}}},
          "post": {{"fixed": True}}}}
def build():
    ball = Pos(50, 0, 100) * Sphere(5)
    ball.label = "ball"
    post = Pos(0, 0, 40) * Box(10, 10, 80)
    post.label = "post"
    return Compound(children=[ball, post])
"""
WHIRL_CREEP = 1.745
WHIRL_FAST = 3143.34


def _whirl(run_design: RunDesign, omega: float, zone: dict[str, Any], **obj: Any) -> Any:
    return run_design(
        textwrap.dedent(WHIRL.format()),
        objectives={"zones": [zone], **obj},
        options={
            "duration_s": 1.0,
            "controls": [{"actuator": "ball", "kind": "constant", "value": omega}],
        },
    )


CUP = {"name": "cup", "kind": "goal", "min": [35, -25, 90], "max": [65, 25, 110]}
GLASS = {"name": "glass", "kind": "forbid", "min": [-60, -1, 90], "max": [-40, 1, 110]}


def test_a_target_whirling_through_the_goal_between_steps_does_not_hold_it(
    run_design: RunDesign,
) -> None:
    """Each step showed the ball in the cup; it spent most of each step elsewhere."""
    r = _whirl(run_design, WHIRL_FAST, CUP, target="ball", goal_hold_s=0.2)
    assert r.failure == FailureKind.GOAL_NOT_REACHED, r.reason
    assert r.metrics["goal"]["hold_s"] < 0.01


def test_honest_twin_a_target_creeping_through_the_goal_holds_it(run_design: RunDesign) -> None:
    r = _whirl(run_design, WHIRL_CREEP, CUP, target="ball", goal_hold_s=0.2)
    assert r.failure is None, r.reason


def test_a_part_whirling_through_a_forbid_zone_between_steps_touches_it(
    run_design: RunDesign,
) -> None:
    """Every step showed the ball on the cup's side (0°–100° in 1 s), never at the glass at
    180°; it went through the glass once a step."""
    r = _whirl(run_design, WHIRL_FAST, GLASS)
    assert r.failure == FailureKind.FORBID_ZONE_HIT, r.reason
    assert r.reason.startswith("Part 'ball' touched the forbidden zone 'glass' at t=0.0")
    assert r.reason.endswith("(passing through it within one step).")


def test_honest_twin_a_part_creeping_short_of_a_forbid_zone_is_clear(
    run_design: RunDesign,
) -> None:
    r = _whirl(run_design, WHIRL_CREEP, GLASS)
    assert r.failure is None, r.reason


PIT = {"zones": [{"name": "pit", "kind": "forbid", "min": [-50, -50, 0], "max": [50, 50, 100]}]}
BALL_AT_300 = """
from build123d import Pos, Sphere
def build():
    ball = Pos(0, 0, 300) * Sphere(5)
    ball.label = "ball"
    return ball
"""


def test_the_state_a_run_ends_in_is_judged(run_design: RunDesign) -> None:
    """Dropped from 300 mm the ball reaches the pit at t = 0.20 s; a run ending then once went
    unchecked after its last check."""
    r = run_design(BALL_AT_300, objectives=PIT, options={"duration_s": 0.2})
    assert r.failure == FailureKind.FORBID_ZONE_HIT, r.reason


def test_honest_twin_a_run_ending_before_the_pit_is_clear(run_design: RunDesign) -> None:
    r = run_design(BALL_AT_300, objectives=PIT, options={"duration_s": 0.19})
    assert r.failure is None, r.reason


# --- actuators and joints ---------------------------------------------------------------------

STALLED = """
from build123d import Box, Pos
PARTS = {"bar": {"joint": {"type": "hinge", "axis": (0, 1, 0), "anchor": (0, 0, 300),
         "range": (-5, 5), "actuator": {"kind": "motor", "force_limit": 1.0, "overload_s": 0.5}}}}
def build():
    bar = Pos(100, 0, 300) * Box(200, 20, 20)
    bar.label = "bar"
    return bar
"""


def _stalled(run_design: RunDesign, value: float) -> Any:
    control = {"actuator": "bar", "kind": "constant", "value": value}
    return run_design(STALLED, options={"duration_s": 1.5, "controls": [control]})


def test_a_motor_held_just_under_its_force_limit_overloads(run_design: RunDesign) -> None:
    """Stalled against its range at 0.99999 of its limit, a motor was never "at" it."""
    r = _stalled(run_design, 0.99999)
    assert r.failure == FailureKind.MOTOR_OVERLOAD, r.reason
    assert r.reason == (
        "Actuator 'bar' was held at its 1 force limit for more than 0.5 s (t=0.50 s)."
    )


def test_honest_twin_a_motor_stalled_at_nine_tenths_of_its_limit_is_within_it(
    run_design: RunDesign,
) -> None:
    r = _stalled(run_design, 0.9)
    assert r.failure is None, r.reason


GATE_TASK = """
from build123d import Box, Pos
PARTS = {"gate": {"joint": {"type": "slide", "axis": (0, 0, 1), "range": (-1, 200),
         "damping": 1, "actuator": {"kind": "motor", "force_limit": 50}}}}
def build():
    gate = Pos(100, 0, 50) * Box(10, 100, 100)
    gate.label = "gate"
    return gate
"""
PROBE_BEHIND_GATE = """
from build123d import Box, Pos
PARTS = {"probe": {"joint": {"type": "slide", "axis": (1, 0, 0), "range": (-1, 300),
         "actuator": {"kind": "motor", "force_limit": 1}}}}
def build():
    probe = Pos(0, 0, 10) * Box(20, 20, 20)
    probe.label = "probe"
    return probe
"""
BEHIND = {"name": "behind", "kind": "goal", "min": [150, -50, 0], "max": [400, 50, 100]}
LIFT = {"actuator": "gate", "kind": "constant", "value": 20}
PUSH = {"actuator": "probe", "kind": "step", "value": 0, "at_s": 0.5, "after": 0.5}


def test_a_request_driving_the_tasks_actuator_is_refused(run_design: RunDesign) -> None:
    """A control for the task's gate lifted it out of the probe's way."""
    r = run_design(
        PROBE_BEHIND_GATE,
        environment={"code": GATE_TASK},
        objectives={"target": "probe", "goal_hold_s": 0.3, "zones": [BEHIND]},
        options={"duration_s": 2.5, "controls": [PUSH, LIFT]},
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "the request's controls name the actuator of environment part 'gate': "
        "SimOptions.controls drive only the design's actuators, Objectives.controls only the "
        "task's"
    )


def test_honest_twin_the_task_may_drive_its_own_actuator(run_design: RunDesign) -> None:
    r = run_design(
        PROBE_BEHIND_GATE,
        environment={"code": GATE_TASK},
        objectives={"target": "probe", "goal_hold_s": 0.3, "zones": [BEHIND], "controls": [LIFT]},
        options={"duration_s": 2.5, "controls": [PUSH]},
    )
    assert r.failure is None, r.reason
    assert r.metrics["parts"]["gate"]["final_position_mm"][2] > 90


HUNG = """
from build123d import Box, Pos
PARTS = {PARTS}
def build():
    rod = Pos(0, 0, 300) * Box(10, 10, 200)
    rod.label = "rod"
    return rod
"""
JITTER = {"duration_s": 0.2, "jitter": {"runs": 2, "rotation_deg": 8, "position_mm": 3}}


def test_a_part_hung_on_a_joint_is_jittered_too(run_design: RunDesign) -> None:
    """Parts on hinges and slides were never perturbed: a design of joints escaped the jitter."""
    hinge = {"rod": {"joint": {"type": "hinge", "axis": (1, 0, 0), "anchor": (0, 0, 400)}}}
    r = run_design(HUNG.replace("{PARTS}", repr(hinge)), options=JITTER)
    moves = [run["perturbation"]["rod"]["rotation_deg"] for run in r.metrics["runs"][1:]]
    assert len(moves) == 2 and all(0 < abs(m) <= 8 for m in moves), r.metrics["runs"]


def test_honest_twin_a_free_part_is_jittered_as_before(run_design: RunDesign) -> None:
    r = run_design(HUNG.replace("{PARTS}", "{}"), options=JITTER)
    shifts = [run["perturbation"]["rod"]["shift_mm"] for run in r.metrics["runs"][1:]]
    assert len(shifts) == 2 and all(max(map(abs, s)) <= 3 for s in shifts)


LOCKED_GEM = """
from build123d import Box, Pos
PARTS = {{"gem": {{"joint": {joint}}}}}
def build():
    gem = Pos(300, 0, 30) * Box(20, 20, 20)
    gem.label = "gem"
    return gem
"""


@pytest.mark.parametrize(
    ("joint", "why"),
    [
        (
            {"type": "slide", "axis": (0, 0, 1), "damping": 1e9},
            "design part 'gem': its joint's damping 1e+09 N per mm/s is above the task's cap "
            "of 10 (a damper that strong is a lock).",
        ),
        (
            {"type": "slide", "axis": (0, 0, 1), "range": (0, 1e-9)},
            "the task's target, design part 'gem', cannot move (it is fixed, welded or held by "
            "joint ranges that let its centre of mass travel less than 0.1 mm), so it cannot be "
            "brought to the goal.",
        ),
    ],
    ids=["damping", "range"],
)
def test_a_target_locked_by_its_joint_is_refused(
    run_design: RunDesign, joint: dict[str, Any], why: str
) -> None:
    """Locked in mid-air inside the goal, the gem "held" it from t = 0."""
    objectives = {**GEM_OBJECTIVES, "zones": GEM_OBJECTIVES["zones"][:1]}
    r = run_design(textwrap.dedent(LOCKED_GEM.format(joint=joint)), objectives=objectives)
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == f"The geometry was rejected: {why}"


def test_honest_twin_a_target_on_a_working_slide_is_judged(run_design: RunDesign) -> None:
    """The same slide with room to move and no damper: the gem drops to the floor, still in
    the goal, and holds it for real."""
    joint = {"type": "slide", "axis": (0, 0, 1), "range": (-50, 50)}
    objectives = {**GEM_OBJECTIVES, "zones": GEM_OBJECTIVES["zones"][:1]}
    r = run_design(textwrap.dedent(LOCKED_GEM.format(joint=joint)), objectives=objectives)
    assert r.failure is None, r.reason
    assert r.metrics["parts"]["gem"]["final_position_mm"][2] == pytest.approx(10, abs=0.5)


def test_labels_that_spell_our_internal_names_are_only_labels(run_design: RunDesign) -> None:
    """A part 'zone:a' beside a zone 'a__solid0' once made MuJoCo's names collide (CRASHED)."""
    code = """
from build123d import Box, Pos
def build():
    box = Pos(0, 0, 10) * Box(20, 20, 20)
    box.label = "zone:a"
    return box
"""
    zone = {"name": "a__solid0", "kind": "forbid", "min": [200, 200, 0], "max": [300, 300, 10]}
    r = run_design(code, objectives={"zones": [zone]}, options={"duration_s": 0.2})
    assert r.failure is None, r.reason


# --- MuJoCo's arena -----------------------------------------------------------------------------

LATTICE = """
from build123d import Box, Compound, Pos
PARTS = {{"l0": {{"fixed": True}}}}
def layer(k):
    bars = []
    for i in range(64):
        off = -200 + (i + 0.5) * 400 / 64
        z = 2.0 + 3.95 * k
        bar = Box(400, 4, 4) if k % 2 == 0 else Box(4, 400, 4)
        bars.append((Pos(0, off, z) if k % 2 == 0 else Pos(off, 0, z)) * bar)
    c = Compound(bars)
    c.label = f"l{{k}}"
    return c
def build():
    return Compound(children=[layer(k) for k in range(LAYERS)])
""".replace("LAYERS", "{layers}")


def test_a_lattice_overflowing_mujocos_arena_is_instability(run_design: RunDesign) -> None:
    """28 layers of 64 crossed bars, each resting on the one below: MuJoCo ran out of arena
    memory for their contacts and the run CRASHED."""
    r = run_design(LATTICE.format(layers=28), options={"duration_s": 0.05})
    assert r.failure == FailureKind.PHYSICS_INSTABILITY, r.reason
    assert r.reason.startswith("The simulation is invalid at t=0.00 s: MuJoCo ran out of memory")


def test_honest_twin_a_small_lattice_stands(run_design: RunDesign) -> None:
    r = run_design(LATTICE.format(layers=2), options={"duration_s": 0.05})
    assert r.failure is None, r.reason

"""SimulationLoop: integration accuracy, frame timing by simulated time, progress, controls."""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np
import pytest

from common.models.simulation import Control, FailureKind
from worker.errors import Failed
from worker.progress import Progress
from worker.simulation.loop import SimulationLoop, control_value

G = 9.81


def test_free_fall_matches_the_analytic_trajectory_before_contact(bd: Any, scene_of: Any) -> None:
    """z(t) = z0 − g·t²/2. MuJoCo's implicit-fast integrator updates velocity before position
    (semi-implicit Euler), so after n steps z = z0 − g·dt²·n(n+1)/2 = z0 − g·t²/2 − g·dt·t/2:
    the discretisation error is exactly g·dt·t/2 (9.8 mm at t = 1 s, dt = 2 ms). The test allows
    that bound plus 1 µm of float noise, and checks that the error is not smaller than half of it
    (i.e. that we really measure this integrator, not a frozen body)."""
    z0 = 10_000.0  # 10 m up: no contact within 1 s
    box = bd.Pos(0, 0, z0) * bd.Box(50, 50, 50)
    box.label = "box"
    scene, obj, opt = scene_of(box, options={"duration_s": 1.0, "fps": 50, "render": True})
    # qpos, not xipos: after mj_step the derived kinematics (xipos) still describe the state
    # one step earlier, while qpos and time are current.
    adr = scene.model.jnt_qposadr[scene.model.body_jntadr[scene.parts["box"].body_id]]
    samples: list[tuple[float, float]] = []

    def on_frame(d: mujoco.MjData) -> None:
        samples.append((float(d.time), float(d.qpos[adr + 2])))

    SimulationLoop(scene, obj, opt, on_frame=on_frame).run()
    dt = opt.timestep_s
    assert len(samples) == 50
    for t, z in samples[1:]:
        analytic = z0 * 1e-3 - G * t * t / 2
        bound = G * dt * t / 2
        err = analytic - z
        assert 0.5 * bound <= err <= bound + 1e-6, (t, err, bound)


def test_a_resting_part_stays_put(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(100, 50, 25) * bd.Box(80, 60, 50)
    box.label = "box"
    scene, obj, opt = scene_of(box, options={"duration_s": 2.0})
    summary = SimulationLoop(scene, obj, opt).run()
    final = summary.parts["box"]["final_position_mm"]
    assert final == pytest.approx([100, 50, 25], abs=0.5)
    assert summary.failure is None
    assert summary.parts["box"]["final_quat"] == pytest.approx([1, 0, 0, 0], abs=1e-3)


def test_frames_are_taken_by_simulated_time(bd: Any, scene_of: Any) -> None:
    """10 s at 30 fps and 2 ms is 300 frames at t = k/30, not 313 (int(1/(fps·dt)) steps)."""
    box = bd.Pos(0, 0, 25) * bd.Box(50, 50, 50)
    box.label = "box"
    scene, obj, opt = scene_of(box, options={"duration_s": 10.0, "fps": 30, "render": True})
    times: list[float] = []
    SimulationLoop(scene, obj, opt, on_frame=lambda d: times.append(float(d.time))).run()
    assert len(times) == 300
    assert np.allclose(times, np.arange(300) / 30, atol=opt.timestep_s / 2 + 1e-9)


def test_progress_reports_increasing_sim_time_and_ends_at_one(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(0, 0, 25) * bd.Box(50, 50, 50)
    box.label = "box"
    scene, obj, opt = scene_of(box, options={"duration_s": 3.0})
    seen: list[Progress] = []
    SimulationLoop(scene, obj, opt, on_progress=seen.append, progress_every_s=0.0).run()
    times = [p.sim_time_s for p in seen]
    assert times == sorted(times)
    assert seen[0].fraction == 0.0 and seen[-1].fraction == 1.0
    assert seen[-1].sim_time_s == pytest.approx(3.0)
    assert {p.phase for p in seen} == {"simulate"}


def test_wall_clock_deadline_stops_the_loop(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(0, 0, 25) * bd.Box(50, 50, 50)
    box.label = "box"
    scene, obj, opt = scene_of(box, options={"duration_s": 60.0})
    import time

    with pytest.raises(Failed) as e:
        SimulationLoop(scene, obj, opt, wall_deadline=time.monotonic() - 1).run()
    assert e.value.kind == FailureKind.TIMEOUT
    assert e.value.reason.startswith("Timeout: the simulation ran out of wall-clock time at t=")


def test_control_values_follow_their_kind() -> None:
    const = Control(actuator="a", kind="constant", value=1.5)
    sine = Control(actuator="a", kind="sine", amplitude=2, frequency_hz=0.25, offset=1)
    step = Control(actuator="a", kind="step", value=-1, at_s=0.5, after=3)
    assert control_value(const, 7.0) == 1.5
    assert control_value(sine, 1.0) == pytest.approx(3.0)  # sin(π/2) = 1
    assert control_value(step, 0.49) == -1 and control_value(step, 0.5) == 3


def test_controls_naming_unknown_actuators_are_refused(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(0, 0, 25) * bd.Box(50, 50, 50)
    box.label = "box"
    controls = [{"actuator": "nope", "kind": "constant", "value": 1}]
    scene, obj, opt = scene_of(box, options={"controls": controls})
    with pytest.raises(Failed, match="unknown actuators \\['nope'\\]") as e:
        SimulationLoop(scene, obj, opt)
    assert e.value.kind == FailureKind.INVALID_GEOMETRY


def test_position_servo_on_a_slide_takes_millimetres(bd: Any, scene_of: Any) -> None:
    carriage = bd.Pos(0, 0, 100) * bd.Box(40, 40, 20)
    carriage.label = "carriage"
    parts = {
        "carriage": {
            "joint": {
                "type": "slide",
                "axis": [1, 0, 0],
                "actuator": {"kind": "position", "kp": 2.0, "force_limit": 100},
                "damping": 0.016,  # N per mm/s: critical for kp 2 N/mm and 32 g
            }
        }
    }
    controls = [{"actuator": "carriage", "kind": "constant", "value": 50}]
    scene, obj, opt = scene_of(
        carriage, options={"duration_s": 3.0, "controls": controls}, parts=parts
    )
    s = SimulationLoop(scene, obj, opt).run()
    x, y, z = s.parts["carriage"]["final_position_mm"]
    assert x == pytest.approx(50, abs=1.0)
    assert (y, z) == pytest.approx((0, 100), abs=1e-6)


def test_jitter_perturbs_free_design_parts_reproducibly(bd: Any, scene_of: Any) -> None:
    box = bd.Pos(0, 0, 25) * bd.Box(50, 50, 50)
    box.label = "box"
    jitter = {"runs": 2, "position_mm": 5, "rotation_deg": 3}
    scene, obj, opt = scene_of(box, options={"duration_s": 0.1, "jitter": jitter, "seed": 7})
    a = SimulationLoop(scene, obj, opt).run(1, np.random.default_rng([7, 1]))
    b = SimulationLoop(scene, obj, opt).run(1, np.random.default_rng([7, 1]))
    assert a.perturbation == b.perturbation
    shift = a.perturbation["box"]["shift_mm"]
    assert all(abs(c) <= 5 for c in shift) and any(abs(c) > 0 for c in shift)
    assert abs(a.perturbation["box"]["rotation_deg"]) <= 3


def test_max_normal_force_matches_mj_contact_force(bd: Any, scene_of: Any) -> None:
    from worker.simulation.loop import max_normal_force

    parts = []
    for i in range(6):
        p = bd.Pos((i % 3) * 45, (i // 3) * 45, 30 + 30 * i) * bd.Box(40, 40, 40)
        p.label = f"p{i}"
        parts.append(p)
    scene, _, _ = scene_of(parts)
    m = scene.model
    d = mujoco.MjData(m)
    f = np.zeros(6)
    checked = 0
    for _ in range(400):
        mujoco.mj_step(m, d)
        if d.ncon:
            expected = 0.0
            for i in range(d.ncon):
                mujoco.mj_contactForce(m, d, i, f)
                expected = max(expected, abs(f[0]))
            assert max_normal_force(m, d) == pytest.approx(expected, rel=1e-9, abs=1e-12)
            checked += 1
    assert checked > 100


# --- the decisive moment and the video's end ------------------------------------------------

FORBID_PIT = {"name": "pit", "kind": "forbid", "min": [-100, -100, 0], "max": [100, 100, 5]}


def falling_block(bd: Any) -> Any:
    block = bd.Pos(0, 0, 200) * bd.Box(40, 40, 40)
    block.label = "block"
    return block


def test_frames_end_one_second_after_the_decision_and_the_run_goes_on(
    bd: Any, scene_of: Any
) -> None:
    """The block touches the pit at ~0.17 s: frames up to 1 s later, the simulation to 3 s."""
    from worker.simulation.loop import VIDEO_TAIL_S

    scene, obj, opt = scene_of(
        falling_block(bd),
        objectives={"zones": [FORBID_PIT]},
        options={"duration_s": 3.0, "fps": 30, "render": True},
    )
    times: list[float] = []
    decided: list[tuple[float, tuple[str, ...]]] = []
    ended: list[float] = []
    s = SimulationLoop(
        scene,
        obj,
        opt,
        on_frame=lambda d: times.append(float(d.time)),
        on_decision=lambda d, dec: decided.append((float(d.time), dec.culprits)),
        on_end=lambda d, dec: ended.append(float(d.time)),
    ).run()
    assert s.kind == FailureKind.FORBID_ZONE_HIT and s.decided_at_s is not None
    assert decided == [(pytest.approx(s.decided_at_s), ("block",))]  # once, at the decision
    assert ended == [pytest.approx(3.0)] and s.sim_time_s == pytest.approx(3.0)
    last = math.floor((s.decided_at_s + VIDEO_TAIL_S) * 30 + 1e-9)
    assert s.frames == len(times) == last + 1
    assert times[-1] <= s.decided_at_s + VIDEO_TAIL_S + opt.timestep_s


def test_full_video_keeps_every_frame_and_changes_nothing_else(bd: Any, scene_of: Any) -> None:
    def one(full: bool) -> Any:
        scene, obj, opt = scene_of(
            falling_block(bd),
            objectives={"zones": [FORBID_PIT]},
            options={"duration_s": 3.0, "fps": 30, "render": True, "full_video": full},
        )
        return SimulationLoop(scene, obj, opt, on_frame=lambda d: None).run()

    short, full = one(False), one(True)
    assert full.frames == 90 and short.frames < 60
    for key in ("failure", "reason", "decided_at_s", "sim_time_s", "steps", "parts", "energy_j"):
        assert getattr(short, key) == getattr(full, key), key
    assert short.max_contact_force_n == full.max_contact_force_n


def test_a_decision_only_the_end_can_make_is_announced_at_the_end(bd: Any, scene_of: Any) -> None:
    scene, obj, opt = scene_of(falling_block(bd), options={"duration_s": 0.5})
    decided: list[float] = []
    s = SimulationLoop(
        scene, obj, opt, on_decision=lambda d, dec: decided.append(float(d.time))
    ).run()
    assert s.failure is None and decided == [pytest.approx(0.5)]


def test_series_are_sampled_at_each_check_and_stay_bounded(bd: Any, scene_of: Any) -> None:
    from worker.simulation.series import MAX_POINTS

    goal = {"name": "pad", "kind": "goal", "min": [-60, -60, 0], "max": [60, 60, 60]}
    scene, obj, opt = scene_of(
        falling_block(bd),
        objectives={"target": "block", "zones": [goal], "goal_hold_s": 0.5},
        options={"duration_s": 20.0},
    )
    s = SimulationLoop(scene, obj, opt).run()
    series = s.series
    assert series is not None and 0 < len(series.t) <= MAX_POINTS + 2
    assert series.t[0] == 0.0 and series.t[-1] == pytest.approx(20.0)
    (dist,) = [v for c, v in series.group("goal")]
    assert dist[0] == pytest.approx(200 - 60)  # centre of mass at z 200, the pad's top at 60
    assert dist[-1] == 0.0
    (speed,) = [v for c, v in series.group("speed")]
    # The peak survives decimation (1 row in 4 here): the speed just before landing, after a
    # 180 mm fall, √(2·g·0.18 m) ≈ 1.88 m/s (less its last 10 ms mean).
    assert speed.max() == pytest.approx(s.parts["block"]["max_speed_mm_s"], rel=1e-6)
    assert 1700 < speed.max() < 1900

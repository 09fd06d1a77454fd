"""Rendering: a real EGL render streamed into an H.264 MP4 that decodes to duration × fps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from common.models.simulation import Objectives, SimOptions
from worker.simulation.cad import extract_geometry
from worker.simulation.physics import run_physics


def test_video_has_duration_times_fps_frames_and_decodes(bd: Any, tmp_path: Path) -> None:
    box = bd.Pos(0, 0, 200) * bd.Box(50, 50, 50)
    box.label = "box"
    opts = SimOptions(duration_s=2.0, fps=25, width=320, height=240)
    out = run_physics(extract_geometry(box), Objectives(), opts, tmp_path)
    assert out.files["video"] == "video.mp4" and out.metrics["frames"] == 50
    with av.open(str(tmp_path / "video.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert len(frames) == 50
    assert frames[0].shape == (240, 320, 3)
    # Not black, and the scene moves: the falling box changes the picture.
    assert frames[0].mean() > 40
    assert np.abs(frames[0].astype(int) - frames[20].astype(int)).mean() > 0.5
    png = (tmp_path / "poster.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_no_render_writes_no_video(bd: Any, tmp_path: Path) -> None:
    box = bd.Pos(0, 0, 25) * bd.Box(50, 50, 50)
    box.label = "box"
    out = run_physics(
        extract_geometry(box), Objectives(), SimOptions(duration_s=0.5, render=False), tmp_path
    )
    # Nothing drawn with GL; the plots are text and come anyway.
    assert set(out.files) == {"mjcf", "plots"}
    assert not any((tmp_path / f).exists() for f in ("video.mp4", "poster.png", "contact.png"))
    assert (tmp_path / "plots.svg").read_text().startswith("<svg ")
    assert (tmp_path / "model.xml").read_text().startswith("<mujoco")


# --- the decisive moment, the marks, the contact sheet -----------------------------------------

PIT = {"name": "pit", "kind": "forbid", "min": [-100, -100, 0], "max": [100, 100, 5]}


def read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def magenta(rgb: np.ndarray) -> int:
    """Pixels of the highlight's magenta (render.HIGHLIGHT_RGB, lit and shaded)."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return int(((r > 120) & (b > 0.6 * r) & (g < 0.45 * r)).sum())


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to MuJoCo's own jitter on llvmpipe: the first frame of a GL context, or one
    right after an orthographic view, differs from an identical frame by at most 2 levels."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b).max()) <= 3


def dropped(bd: Any, z: float = 200) -> Any:
    box = bd.Pos(0, 0, z) * bd.Box(50, 50, 50)
    box.label = "box"
    return box


def test_poster_is_the_decisive_moment_and_the_last_frame_the_end(bd: Any, tmp_path: Path) -> None:
    obj = Objectives.model_validate({"zones": [PIT]})
    opts = SimOptions(duration_s=3.0, width=320, height=240)
    out = run_physics(extract_geometry(dropped(bd)), obj, opts, tmp_path)
    (decided,) = [r["decided_at_s"] for r in out.metrics["runs"]]
    assert out.failure is not None and out.failure.kind.value == "FORBID_ZONE_HIT"
    assert set(out.files) == {"mjcf", "video", "poster", "contact_sheet", "last_frame", "plots"}
    poster, last = read_png(tmp_path / "poster.png"), read_png(tmp_path / "last.png")
    assert poster.shape == last.shape == (240, 320, 3)
    # The box falls 150 mm in ~0.17 s: at the decision it is still moving, at the end it rests.
    assert 0.1 < decided < 0.3 and not same_picture(poster, last)
    assert magenta(poster) > 200 and magenta(last) > 200  # the culprit is highlighted in both
    with av.open(str(tmp_path / "video.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # The video ends 1 s after the decision; its first frame is before it (nothing highlighted).
    assert len(frames) == out.metrics["frames"] == int((decided + 1.0) * 30) + 1
    assert magenta(frames[0]) < 20 < 200 < magenta(frames[-1])


def test_contact_sheet_shows_four_views_of_the_decisive_moment(bd: Any, tmp_path: Path) -> None:
    # Off-centre and longer along x than y, so that front, side and top all look different.
    pit = {"name": "pit", "kind": "forbid", "min": [-200, -60, 0], "max": [100, 60, 5]}
    box = bd.Pos(-60, 0, 200) * bd.Box(80, 40, 60)
    box.label = "box"
    obj = Objectives.model_validate({"zones": [pit]})
    opts = SimOptions(duration_s=1.0, width=320, height=240)
    run_physics(extract_geometry(box), obj, opts, tmp_path)
    sheet = read_png(tmp_path / "contact.png")
    assert sheet.shape == (2 * 240 + 2, 2 * 320 + 2, 3)
    panels = [sheet[:240, :320], sheet[:240, 322:], sheet[242:, :320], sheet[242:, 322:]]
    for p in panels:
        assert p.std() > 10  # a picture, not a blank panel
        assert magenta(p) > 50  # the culprit, highlighted in every view
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(panels[i].astype(int) - panels[j].astype(int)).mean() > 5


def test_same_request_same_images(bd: Any, tmp_path: Path) -> None:
    obj = Objectives.model_validate({"zones": [PIT]})
    opts = SimOptions(duration_s=1.0, width=320, height=240)
    names = ("poster.png", "contact.png", "last.png", "plots.svg")
    got = []
    for k in range(2):
        d = tmp_path / str(k)
        d.mkdir()
        run_physics(extract_geometry(dropped(bd)), obj, opts, d)
        got.append([(d / n).read_bytes() for n in names])
    assert got[0] == got[1]


def test_a_failing_perturbed_run_gives_the_poster(bd: Any, tmp_path: Path) -> None:
    """A box at rest 2 mm from a forbid zone passes; shifted by up to 10 mm it fails. The poster
    is then the perturbed run's decisive moment, no longer the nominal run's end (last.png)."""
    wall = {"name": "wall", "kind": "forbid", "min": [27, -100, 0], "max": [200, 100, 200]}
    obj = Objectives.model_validate({"zones": [wall]})
    box = dropped(bd, z=26)
    same = run_physics(
        extract_geometry(box), obj, SimOptions(duration_s=0.5, width=160, height=120), tmp_path
    )
    assert same.failure is None
    assert same_picture(read_png(tmp_path / "poster.png"), read_png(tmp_path / "last.png"))
    jittered = SimOptions.model_validate(
        {"duration_s": 0.5, "width": 160, "height": 120, "jitter": {"runs": 3, "position_mm": 10}}
    )
    j = tmp_path / "j"
    j.mkdir()
    out = run_physics(extract_geometry(box), obj, jittered, j)
    assert out.failure is not None and out.reason.startswith("Perturbed run ")
    assert not same_picture(read_png(j / "poster.png"), read_png(j / "last.png"))


def test_zones_are_drawn_by_kind(bd: Any, tmp_path: Path) -> None:
    """Each kind's opaque outline colour (builder.ZONE_RGBA) appears where its zone is."""
    from worker.simulation.builder import ZONE_RGBA

    zones = [
        {"name": "g", "kind": "goal", "min": [-300, -100, 0], "max": [-150, 100, 100]},
        PIT,
        {"name": "b", "kind": "build", "min": [150, -100, 0], "max": [300, 100, 100]},
    ]
    obj = Objectives.model_validate({"target": "box", "zones": zones})
    run_physics(
        extract_geometry(dropped(bd)), obj, SimOptions(duration_s=0.2, render=True), tmp_path
    )
    poster = read_png(tmp_path / "poster.png").astype(int)
    for kind in ("goal", "forbid", "build"):
        target = np.array(ZONE_RGBA[kind][:3]) * 255
        near = (np.abs(poster - target) < 40).all(axis=-1).sum()
        assert near > 100, kind


def test_a_diverged_run_is_rendered_and_keeps_its_verdict(bd: Any, tmp_path: Path) -> None:
    """NaN in the state at the decision: the pictures are drawn all the same and the verdict
    stays PHYSICS_INSTABILITY (a picture never turns a verdict into a crash)."""
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
    opts = SimOptions.model_validate(
        {
            "duration_s": 0.5,
            "width": 160,
            "height": 120,
            "controls": [{"actuator": "slider", "kind": "constant", "value": 1e7}],
        }
    )
    out = run_physics(extract_geometry(slider, parts), Objectives(), opts, tmp_path)
    assert out.failure is not None and out.failure.kind.value == "PHYSICS_INSTABILITY"
    assert {"poster", "contact_sheet", "last_frame", "plots"} <= set(out.files)
    assert read_png(tmp_path / "contact.png").shape == (2 * 120 + 2, 2 * 160 + 2, 3)


def test_a_state_of_nan_is_drawn_without_an_error(bd: Any, scene_of: Any) -> None:
    """What a diverged run can leave in MjData: every view, with the culprit highlighted."""
    import mujoco

    from worker.simulation.render import Banner, Marks, Renderer

    scene, obj, _ = scene_of(dropped(bd), objectives={"zones": [PIT]})
    d = mujoco.MjData(scene.model)
    d.qpos[:] = np.nan
    mujoco.mj_forward(scene.model, d)
    assert not np.isfinite(d.xipos[scene.parts["box"].body_id]).any()
    marks = Marks(Banner("PHYSICS_INSTABILITY", 0.01, ("box",)))
    with Renderer(scene, obj, 160, 120) as r:
        assert r.render(d, marks=marks).shape == (120, 160, 3)
        assert r.contact_sheet(d, marks).shape == (242, 322, 3)


def _encoders() -> list[Any]:
    import threading

    return [t for t in threading.enumerate() if t.name == "h264"]


def _frame(i: int, w: int = 64, h: int = 48) -> Any:
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[:, : (i * 3) % w] = 255  # each frame differs, so none is a copy of the last
    return rgb


def test_the_encoder_thread_loses_no_frame_and_ends_with_the_writer(tmp_path: Path) -> None:
    """More frames than the queue holds, written faster than they are encoded: all are in the
    file, in order, and the thread is gone after close."""
    from worker.simulation.render import QUEUE_FRAMES, VideoWriter

    n = QUEUE_FRAMES * 5
    w = VideoWriter(tmp_path / "v.mp4", 64, 48, 30)
    assert len(_encoders()) == 1
    for i in range(n):
        w.write(_frame(i))
    w.close()
    assert _encoders() == [] and w.frames == n
    with av.open(str(tmp_path / "v.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    assert len(decoded) == n
    bright = [int((f[24].mean(axis=1) > 128).sum()) for f in decoded]  # columns lit, row 24
    assert all(abs(b - (i * 3) % 64) <= 2 for i, b in enumerate(bright))


def test_an_encoder_error_reaches_the_caller_and_leaves_no_thread(tmp_path: Path) -> None:
    """A frame the encoder refuses (floats, not bytes): the error is raised in the render
    thread, as the worker's own fault, and the writer's thread is gone."""
    import pytest

    from worker.errors import InfrastructureError
    from worker.simulation.render import QUEUE_FRAMES, VideoError, VideoWriter

    w = VideoWriter(tmp_path / "v.mp4", 64, 48, 30)
    w.write(_frame(0))
    w.write(np.zeros((48, 64, 3), dtype=np.float64))  # a frame of floats
    with pytest.raises(VideoError, match="could not be encoded") as e:
        for i in range(QUEUE_FRAMES * 4):  # never blocks on a queue nobody empties
            w.write(_frame(i))
        w.close()
    assert isinstance(e.value, InfrastructureError) and e.value.cause == "render"
    w.abort()  # after a failure: nothing left to do, and no error
    assert _encoders() == []


def test_a_run_that_raises_joins_the_encoder(bd: Any, scene_of: Any, tmp_path: Path) -> None:
    """A run that ends in an exception (a limit, a cancel) leaves the Recorder by abort: the
    thread joined, the exception the run's own."""
    import mujoco
    import pytest

    from worker.simulation.render import Recorder, Renderer

    scene, obj, _ = scene_of(dropped(bd))
    d = mujoco.MjData(scene.model)
    mujoco.mj_forward(scene.model, d)
    with Renderer(scene, obj, 64, 48) as r:
        with pytest.raises(KeyboardInterrupt), Recorder(r, tmp_path / "v.mp4", 30) as rec:
            for _ in range(20):
                rec.frame(d)
            assert rec.frames == 20
            raise KeyboardInterrupt
        assert _encoders() == []

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

"""The in-process figures: the physics loop against a bare `mj_step` loop, and the Recorder
against a bare `mujoco.Renderer` loop and against today's look, all on the 5-part scene that
bench/bench_loop.py uses, in this process (our code on our own geometry: no jail needed)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: headless rendering

import tempfile
import time
from pathlib import Path
from typing import Any

import av
import mujoco
import numpy as np

from common.models.simulation import Objectives, SimOptions
from worker.simulation.builder import Scene, build_scene
from worker.simulation.cad import extract_geometry
from worker.simulation.imports import defer_unused_imports
from worker.simulation.loop import SimulationLoop
from worker.simulation.render import Recorder, Renderer

WARM_UP_FRAMES = 5
"""Rendered before each timed loop and not counted."""
TODAYS_LOOK = {"shadowsize": 1024, "offsamples": 0}
"""The look simjail rendered with when issue 12 was filed (builder.py then): a 1024 shadow map
from the one shadow-casting light, no MSAA. `render_speedup` is measured against it."""


def pile(n: int) -> list[Any]:
    """n parts dropped in a loose grid: boxes and spheres that collide as they settle."""
    defer_unused_imports()
    from build123d import Box, Pos, Sphere

    parts = []
    for i in range(n):
        x, y, z = (i % 5) * 60 - 120, ((i // 5) % 5) * 60 - 120, 40 + (i // 25) * 60 + (i % 3) * 15
        s = Pos(x, y, z) * (Box(40, 40, 40) if i % 2 else Sphere(20))
        s.label = f"p{i}"
        parts.append(s)
    return parts


def five_parts(options: SimOptions) -> Scene:
    return build_scene(extract_geometry(pile(5)), Objectives(), options)


def physics(seconds: float) -> dict[str, float]:
    """steps/s of SimulationLoop and of a bare mj_step loop on the same model, alternated and
    best of 3 each (the other core is busy with other people's work)."""
    opt = SimOptions(duration_s=seconds, render=False)
    scene = five_parts(opt)
    steps = round(seconds / opt.timestep_s)

    def bare() -> float:
        d = mujoco.MjData(scene.model)
        mujoco.mj_forward(scene.model, d)
        t = time.perf_counter()
        for _ in range(steps):
            mujoco.mj_step(scene.model, d)
        return steps / (time.perf_counter() - t)

    def loop() -> float:
        s = SimulationLoop(five_parts(opt), Objectives(), opt).run()
        return float(s.steps / s.wall_time_s)

    bares, loops = [], []
    for _ in range(3):
        bares.append(bare())
        loops.append(loop())
    return {"bare_steps_per_s": round(max(bares)), "loop_steps_per_s": round(max(loops))}


def _camera(scene: Scene) -> mujoco.MjvCamera:
    """Today's camera (render.scene_camera when the issue was filed), pinned for the baseline."""
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = scene.extent_center_m
    cam.distance = max(scene.extent_radius_m * 2.6, 0.15)
    cam.azimuth, cam.elevation = 135.0, -22.0
    return cam


def _bare_fps(scene: Scene, opt: SimOptions, frames: int, encode: bool) -> float:
    """A bare mujoco.Renderer loop on the scene's model as it is, optionally feeding today's
    encoder (libx264 veryfast, crf 23, on the render thread)."""
    m = scene.model
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    r = mujoco.Renderer(m, opt.height, opt.width)
    cam = _camera(scene)
    with tempfile.TemporaryDirectory() as tmp:
        container = av.open(str(Path(tmp) / "v.mp4"), mode="w")
        stream = container.add_stream("libx264", rate=opt.fps)
        stream.width, stream.height, stream.pix_fmt = opt.width, opt.height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for _ in range(WARM_UP_FRAMES):  # the context's first frames compile its shaders
            r.update_scene(d, camera=cam)
            r.render()
        t = time.perf_counter()
        for _ in range(frames):
            r.update_scene(d, camera=cam)
            rgb = r.render()
            if encode:
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
        fps = frames / (time.perf_counter() - t)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    r.close()
    return fps


def _recorder_fps(scene: Scene, opt: SimOptions, frames: int) -> float:
    d = mujoco.MjData(scene.model)
    mujoco.mj_forward(scene.model, d)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Renderer(scene, Objectives(), opt.width, opt.height) as r,
    ):
        for _ in range(WARM_UP_FRAMES):
            r.render(d)
        rec = Recorder(r, Path(tmp) / "v.mp4", opt.fps)
        t = time.perf_counter()
        for _ in range(frames):
            rec.frame(d)
        rec.close()  # the encoder's tail belongs to the video
        return frames / (time.perf_counter() - t)


def todays_look(scene: Scene) -> Scene:
    """The scene's model set to TODAYS_LOOK (its lights' shadows as the builder made them then:
    the first light casts, the others do not)."""
    m = scene.model
    m.vis.quality.shadowsize = TODAYS_LOOK["shadowsize"]
    m.vis.quality.offsamples = TODAYS_LOOK["offsamples"]
    if m.nlight:
        m.light_castshadow[:] = np.arange(m.nlight) == 0
    return scene


def render(frames: int) -> dict[str, float]:
    """fps of the Recorder (render + encode) and of a bare Renderer loop on the same model;
    and of today's look (a bare loop feeding today's encoder, as the Recorder did then)."""
    opt = SimOptions(duration_s=frames / 30)
    best: dict[str, list[float]] = {"raw": [], "recorder": [], "today": []}
    for _ in range(2):
        best["raw"].append(_bare_fps(five_parts(opt), opt, frames, encode=False))
        best["recorder"].append(_recorder_fps(five_parts(opt), opt, frames))
        best["today"].append(_bare_fps(todays_look(five_parts(opt)), opt, frames, encode=True))
    return {
        "frames": frames,
        "raw_renderer_fps": round(max(best["raw"]), 1),
        "recorder_fps": round(max(best["recorder"]), 1),
        "todays_look_recorder_fps": round(max(best["today"]), 1),
    }

"""The in-process figures: the physics loop against a bare `mj_step` loop, and the Recorder
against a bare `mujoco.Renderer` loop and against today's Recorder, all on the 5-part scene that
bench/bench_loop.py uses, in this process (our code on our own geometry: no jail needed)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: headless rendering

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import mujoco

from common.models.simulation import Objectives, SimOptions
from worker.simulation.builder import Scene, build_scene
from worker.simulation.cad import extract_geometry
from worker.simulation.imports import defer_unused_imports
from worker.simulation.loop import SimulationLoop
from worker.simulation.render import (
    PERSPECTIVE,
    STILL_LOOK,
    VIDEO_LOOK,
    Banner,
    Marks,
    Recorder,
    Renderer,
    scene_camera,
)

WARM_UP_FRAMES = 5
"""Rendered before each timed loop and not counted."""


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


ZONES = {
    "target": "p0",
    "zones": [
        {"name": "goal", "kind": "goal", "min": [150, -150, 0], "max": [300, 150, 150]},
        {"name": "pit", "kind": "forbid", "min": [-300, -150, 0], "max": [-150, 150, 5]},
        {"name": "bench", "kind": "build", "min": [-150, -150, 0], "max": [150, 150, 300]},
    ],
}
"""Three zones, one of each kind, around the 5-part pile (bench/bench_loop.py's): what a video
outlines, fills and names in its legend."""


def _states(scene: Scene, opt: SimOptions, frames: int) -> list[mujoco.MjData]:
    """The states a video of the pile settling shows, one per frame: every variant renders
    these same pictures (a still picture would flatter the encoder)."""
    m = scene.model
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    out = []
    for _ in range(frames):
        for _ in range(round(1 / (opt.fps * opt.timestep_s))):
            mujoco.mj_step(m, d)
        out.append(copy.copy(d))
    return out


def _encoder(path: Path, opt: SimOptions) -> tuple[Any, Any]:
    """Today's encoder settings (render.VideoWriter's): libx264 veryfast, crf 23, yuv420p."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=opt.fps)
    stream.width, stream.height, stream.pix_fmt = opt.width, opt.height, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "23"}
    return container, stream


def _bare_fps(scene: Scene, opt: SimOptions, states: list[mujoco.MjData]) -> float:
    """A bare mujoco.Renderer loop on the same model, camera and look as the video's frames
    (render.VIDEO_LOOK set on its scene as on ours), reading each frame's pixels."""
    m = scene.model
    r = mujoco.Renderer(m, opt.height, opt.width)
    cam = scene_camera(scene)
    try:
        for s in states[:WARM_UP_FRAMES]:  # the context's first frames compile its shaders
            r.update_scene(s, camera=cam)
            VIDEO_LOOK.apply(r.scene)
            r.render()
        t = time.perf_counter()
        for s in states:
            r.update_scene(s, camera=cam)
            VIDEO_LOOK.apply(r.scene)
            r.render()
        return len(states) / (time.perf_counter() - t)
    finally:
        r.close()


def _recorder_fps(
    scene: Scene, obj: Objectives, opt: SimOptions, states: list[mujoco.MjData]
) -> float:
    """The Recorder as a run drives it: every frame with the verdict banner, the culprit
    highlighted, the zones and the legend, encoded on its thread; the video's tail counted."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        Renderer(scene, obj, opt.width, opt.height) as r,
    ):
        for s in states[:WARM_UP_FRAMES]:
            r.render(s, look=VIDEO_LOOK)
        rec = Recorder(r, Path(tmp) / "v.mp4", opt.fps)
        rec.marks = MARKS
        t = time.perf_counter()
        for s in states:
            rec.frame(s)
        rec.close()  # the encoder's tail belongs to the video
        return len(states) / (time.perf_counter() - t)


def _todays_fps(
    scene: Scene, obj: Objectives, opt: SimOptions, states: list[mujoco.MjData]
) -> float:
    """Today's Recorder (main when issue 12 started on it): the same Renderer, marks and HUD,
    but every frame with shadows (render.STILL_LOOK: the builder's 1024 shadow map) and encoded
    on the render thread before the next frame is drawn."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        Renderer(scene, obj, opt.width, opt.height) as r,
    ):
        for s in states[:WARM_UP_FRAMES]:
            r.render(s, look=STILL_LOOK)
        container, stream = _encoder(Path(tmp) / "v.mp4", opt)
        t = time.perf_counter()
        for s in states:
            rgb = r.render(s, PERSPECTIVE, MARKS, look=STILL_LOOK)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        return len(states) / (time.perf_counter() - t)


MARKS = Marks(Banner("FORBID_ZONE_HIT", 1.23, ("p0",)))


def render(frames: int) -> dict[str, Any]:
    """fps of the Recorder (render, marks, HUD, encode on its thread) and of a bare Renderer
    loop on the same model in the same look; and of today's Recorder (shadows on every frame,
    encoding inline). 640 × 480 (SimOptions' default), 5 parts, 3 zones, the states of the pile
    settling; alternated, best of 3 rounds each (the other core is rarely idle)."""
    opt = SimOptions(duration_s=frames / 30)
    obj = Objectives.model_validate(ZONES)
    scene = build_scene(extract_geometry(pile(5)), obj, opt)
    states = _states(scene, opt, frames)
    best: dict[str, list[float]] = {"raw": [], "recorder": [], "today": []}
    for _ in range(3):
        best["raw"].append(_bare_fps(scene, opt, states))
        best["recorder"].append(_recorder_fps(scene, obj, opt, states))
        best["today"].append(_todays_fps(scene, obj, opt, states))
    return {
        "frames": frames,
        "size": f"{opt.width}x{opt.height}",
        "raw_renderer_fps": round(max(best["raw"]), 1),
        "recorder_fps": round(max(best["recorder"]), 1),
        "todays_recorder_fps": round(max(best["today"]), 1),
        "rounds_fps": {k: [round(x, 1) for x in v] for k, v in best.items()},
    }

"""Offscreen rendering (EGL) streamed into an H.264 MP4, and a poster PNG.

Frames go to the encoder as they are rendered; the video is never held in memory. Settings are the
fast ones for a CPU renderer (DESIGN.md §7): the builder sets a 1024 shadow map and no MSAA.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import av
import mujoco
import numpy as np

from worker.errors import InfrastructureError
from worker.simulation.builder import Scene


class RenderError(InfrastructureError):
    """Offscreen rendering could not start (no EGL/OSMesa). An infrastructure fault."""

    cause = "render"


def scene_camera(scene: Scene) -> mujoco.MjvCamera:
    """A free camera that frames every part and zone, seen from the front-left, above."""
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = scene.extent_center_m
    cam.distance = max(scene.extent_radius_m * 2.6, 0.15)
    cam.azimuth = 135.0
    cam.elevation = -22.0
    return cam


class VideoWriter:
    """H.264 (yuv420p) MP4 writer fed one RGB frame at a time."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = path
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        # 'veryfast' keeps encoding well under rendering cost; crf 23 is x264's visual default.
        self._stream.options = {"preset": "veryfast", "crf": "23"}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


class Recorder:
    """Renders MjData to a video file and keeps the last frame as the poster.

    Use as a context manager; `capture` is the loop's `on_frame` callback."""

    def __init__(self, scene: Scene, video_path: Path, width: int, height: int, fps: int) -> None:
        try:
            self._renderer = mujoco.Renderer(scene.model, height=height, width=width)
        except Exception as e:  # EGL missing or broken: say what to do
            raise RenderError(
                f"offscreen rendering failed ({e}); install Mesa's EGL (libegl1, "
                "libgl1-mesa-dri) or run with --no-render"
            ) from None
        self._camera = scene_camera(scene)
        self._option = mujoco.MjvOption()
        self._writer = VideoWriter(video_path, width, height, fps)
        self.last: np.ndarray | None = None
        self.render_s = 0.0

    def capture(self, data: mujoco.MjData) -> None:
        import time

        t0 = time.perf_counter()
        self._renderer.update_scene(data, camera=self._camera, scene_option=self._option)
        rgb = self._renderer.render()
        self._writer.write(rgb)
        self.last = rgb
        self.render_s += time.perf_counter() - t0

    @property
    def frames(self) -> int:
        return self._writer.frames

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._renderer.close()


def write_png(path: Path, rgb: np.ndarray) -> None:
    with av.open(str(path), mode="w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height = rgb.shape[1], rgb.shape[0]
        s.pix_fmt = "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)

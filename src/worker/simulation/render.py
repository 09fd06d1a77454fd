"""Offscreen rendering (EGL): the video, the decisive-moment stills and the contact sheet.

`Renderer` owns one GL context and MuJoCo scene and draws a view of MjData with the marks of the
result: the zones filled and outlined by kind (goal: solid edges; forbid: heavy edges and a cross
on the top face; build: dashed edges; GL lines), the culprit tinted, haloed and pointed at, and a
HUD drawn by MuJoCo's own overlay (`mjr_rectangle` / `mjr_text`) before the pixels are read:
simulated time, the verdict once latched, a legend. Each picture is drawn in a `Look`: the
video's frames without shadows (VIDEO_LOOK: shadows are half of a frame's cost on llvmpipe), the
stills with them (STILL_LOOK). bench/bench_loop.py measures what each setting and each mark
costs a raw `mujoco.Renderer` frame; `simjail bench` the Recorder against one.

`Recorder` holds the loop's callbacks: each frame into the H.264 stream (encoded on the
VideoWriter's own thread, fed by a bounded queue, never held whole in memory), the decisive
moment into stills (poster, contact sheet), the final state into the last frame. The builder
sets a 1024 shadow map and no MSAA (DESIGN.md §7). Rendering is deterministic: the same request
gives the same pixels.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import av
import mujoco
import numpy as np
from numpy.typing import NDArray

from common.models.simulation import Objectives
from worker.errors import InfrastructureError
from worker.simulation.builder import MM, ZONE_RGBA, Scene
from worker.simulation.objectives import Decision

HIGHLIGHT_RGB = (1.0, 0.1, 0.85)
"""Magenta: the culprit of a FAIL, or the target of a SUCCESS. Neither a zone's colour nor one of
the default part colours (cad.PALETTE); a design may still paint a part magenta, so the
highlight is also a halo and an arrow."""
FAIL_RGBA = (0.72, 0.08, 0.08, 0.92)
SUCCESS_RGBA = (0.08, 0.5, 0.2, 0.92)
PANEL_RGBA = (0.08, 0.08, 0.1, 0.72)
MAX_TEXT = 48
"""Characters of one HUD line (labels are at most 64; the font is ASCII)."""
SHEET_PANEL_MAX_W = 800
"""Widest panel of the contact sheet (2 × 2 panels: at most 1600 px wide)."""


@dataclass(frozen=True)
class Look:
    """What a picture pays for beyond the scene itself. On llvmpipe (Mesa's CPU renderer, what a
    worker without a GPU has) shadows are the one setting that costs much: ~12 of ~24 ms of a
    640 × 480 frame of the 5-part scene (a shadow map is a second pass over every geom, and
    each pixel samples it). The lights, the sky, the floor's texture, the zone outlines and the
    HUD cost a millisecond or less each without shadows (BENCHMARKS.md, bench/bench_loop.py)."""

    shadows: bool

    def apply(self, scn: mujoco.MjvScene) -> None:
        """Set this look on a scene mjv_updateScene just filled (ours, or a bare Renderer's)."""
        scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.shadows)


VIDEO_LOOK = Look(shadows=False)
"""Every frame of the video: no shadows, so the video renders at ~2× the speed. Parts keep their
shading (three lights), colours and outlines; zones their fill and outlines; the floor its grid.
What shadows told (how high a part is above the floor) the contact sheet's front and side views
show exactly."""
STILL_LOOK = Look(shadows=True)
"""The poster, the contact sheet and the last frame: a handful of pictures a job, with shadows."""


class RenderError(InfrastructureError):
    """Offscreen rendering could not start (no EGL/OSMesa). An infrastructure fault."""

    cause = "render"


@dataclass(frozen=True)
class View:
    name: str
    azimuth: float
    elevation: float
    orthographic: bool = False


PERSPECTIVE = View("perspective", 135.0, -22.0)
FRONT = View("front", 90.0, 0.0, True)
"""Looking along +y: x to the right, z up."""
SIDE = View("side", 180.0, 0.0, True)
"""Looking along -x: y to the right, z up."""
TOP = View("top", 90.0, -90.0, True)
"""Looking down: x to the right, y up."""
SHEET_VIEWS = (PERSPECTIVE, FRONT, SIDE, TOP)


@dataclass(frozen=True)
class Banner:
    """The verdict, once latched, as a frame shows it."""

    failure: str | None
    """The FailureKind's name; None for a success."""
    time_s: float
    parts: tuple[str, ...]
    run: str = ""
    """Which run it is, when it is not the nominal one."""

    @classmethod
    def of(cls, decision: Decision, run: str = "") -> Banner:
        kind = decision.failure.kind.value if decision.failure is not None else None
        return cls(kind, decision.time_s, decision.culprits, run)


@dataclass(frozen=True)
class Marks:
    """What a frame shows beyond the scene: the verdict (once latched) and its parts."""

    banner: Banner | None = None

    @property
    def highlight(self) -> tuple[str, ...]:
        return self.banner.parts if self.banner is not None else ()


def scene_camera(scene: Scene) -> mujoco.MjvCamera:
    """A free camera that frames every part and zone, seen from the front-left, above."""
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = scene.extent_center_m
    cam.distance = max(scene.extent_radius_m * 2.6, 0.15)
    cam.azimuth = PERSPECTIVE.azimuth
    cam.elevation = PERSPECTIVE.elevation
    return cam


def _ascii(text: str, limit: int = MAX_TEXT) -> str:
    """MuJoCo's font is ASCII: anything else shows as '?'; long text is cut with '~'."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "~"


def _font_scale(height: int) -> int:
    if height <= 600:
        return int(mujoco.mjtFontScale.mjFONTSCALE_100)
    if height <= 900:
        return int(mujoco.mjtFontScale.mjFONTSCALE_150)
    return int(mujoco.mjtFontScale.mjFONTSCALE_200)


@dataclass(frozen=True)
class _Segment:
    a: NDArray[np.float64]
    b: NDArray[np.float64]
    rgba: NDArray[np.float32]
    width: float
    """In units of the picture's base line width (which grows with its height)."""


def _zone_segments(objectives: Objectives) -> list[_Segment]:
    """The outline of every zone, by kind: goal solid, forbid heavy with a cross on top, build
    dashed. Drawn as GL lines: as capsules, three zones cost ~35 ms a frame on llvmpipe; as
    lines next to nothing (bench/bench_loop.py)."""
    segs: list[_Segment] = []
    for z in objectives.zones:
        lo, hi = np.array(z.min) * MM, np.array(z.max) * MM
        rgba = np.array([*ZONE_RGBA[z.kind][:3], 1.0], dtype=np.float32)
        c = [
            np.array([x, y, w])
            for x in (lo[0], hi[0])
            for y in (lo[1], hi[1])
            for w in (lo[2], hi[2])
        ]
        edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1]
        width = {"goal": 1.25, "forbid": 1.75, "build": 0.9}[z.kind]
        for i, j in edges:
            if z.kind == "build":  # dashed: 9 dashes per edge
                for k in range(9):
                    a = c[i] + (c[j] - c[i]) * (k / 9)
                    b = c[i] + (c[j] - c[i]) * ((k + 0.55) / 9)
                    segs.append(_Segment(a, b, rgba, width))
            else:
                segs.append(_Segment(c[i], c[j], rgba, width))
        if z.kind == "forbid":  # a cross on the top face: "keep out"
            top = hi[2]
            for a, b in (((lo[0], lo[1]), (hi[0], hi[1])), ((lo[0], hi[1]), (hi[0], lo[1]))):
                segs.append(_Segment(np.array([*a, top]), np.array([*b, top]), rgba, 1.0))
    return segs


def _ortho_half_height(
    box: tuple[NDArray[np.float64], NDArray[np.float64]], view: View, aspect: float
) -> float:
    """Half the height (m) an orthographic view needs to show `box` whole, with a margin."""
    ext = box[1] - box[0]
    across, up = {"front": (ext[0], ext[2]), "side": (ext[1], ext[2])}.get(
        view.name, (ext[0], ext[1])
    )
    return float(max(up / 2, across / 2 / aspect) * 1.08)


def _scale_bar(px_per_m: float, width: int) -> tuple[int, str] | None:
    """A round length (1, 2 or 5 × 10^k mm) near a fifth of the picture's width, in pixels."""
    if not (np.isfinite(px_per_m) and px_per_m > 0):
        return None
    target_mm = width / 5 / px_per_m / MM
    k = 10 ** np.floor(np.log10(target_mm))
    mm = max((f * k for f in (1, 2, 5, 10) if f * k <= target_mm), default=k)
    return max(1, round(mm * MM * px_per_m)), f"{mm:g} mm"


class Renderer:
    """One offscreen GL context and MuJoCo scene for `scene`, at most `width` × `height`."""

    def __init__(self, scene: Scene, objectives: Objectives, width: int, height: int) -> None:
        m = scene.model
        self.scene = scene
        self.width, self.height = width, height
        try:
            self._gl = mujoco.GLContext(width, height)
            self._gl.make_current()
        except Exception as e:  # EGL missing or broken: say what to do
            raise RenderError(
                f"offscreen rendering failed ({e}); install Mesa's EGL (libegl1, "
                "libgl1-mesa-dri) or run with --no-render"
            ) from None
        self._con = mujoco.MjrContext(m, _font_scale(height))
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._unit = max(scene.extent_radius_m * 0.005, 0.0005)
        self._segments = _zone_segments(objectives)
        self._scn = mujoco.MjvScene(m, maxgeom=m.ngeom + len(self._segments) + 4 * 200 + 100)
        self._opt = mujoco.MjvOption()
        self._cam = scene_camera(scene)
        self._buf = np.empty((height, width, 3), dtype=np.uint8)
        self._zeros3 = np.zeros(3)
        self._eye9 = np.eye(3).ravel()
        # Rigid parts: a geom's distance to its body's centre of mass never changes.
        self._halo_m = {
            p.label: max(
                float(np.linalg.norm(m.geom_pos[g])) + float(m.geom_rbound[g]) for g in p.geom_ids
            )
            for p in scene.parts.values()
        }
        # The t = 0 box of every solid and zone (what scene_camera frames too), and the geoms
        # whose current place widens it.
        pts = [v * MM for vs in scene.solid_mm.values() for v in vs]
        pts += [np.array([z.min, z.max], dtype=np.float64) * MM for z in objectives.zones]
        allp = np.concatenate(pts)
        self._box0 = (allp.min(axis=0), allp.max(axis=0))
        self._all_geoms = np.array(
            [g for p in scene.parts.values() for g in p.geom_ids], dtype=np.int64
        )
        self._all_rbound = m.geom_rbound[self._all_geoms][:, None]
        self._legend = [
            (kind, ", ".join(z.name for z in objectives.zones if z.kind == kind))
            for kind in ("goal", "forbid", "build")
            if any(z.kind == kind for z in objectives.zones)
        ]
        self.render_s = 0.0

    # --- one picture -----------------------------------------------------------------------

    def render(
        self,
        d: mujoco.MjData,
        view: View = PERSPECTIVE,
        marks: Marks | None = None,
        size: tuple[int, int] | None = None,
        label: str = "",
        hud: bool = True,
        look: Look = STILL_LOOK,
    ) -> NDArray[np.uint8]:
        """An RGB image (height × width × 3) of `d` seen from `view` in `look`, with `marks`:
        the parts highlighted and, with `hud`, the verdict and the legend (else only `label`
        and the time)."""
        t0 = time.perf_counter()
        marks = marks or Marks()
        w, h = size or (self.width, self.height)
        m = self.scene.model
        self._gl.make_current()
        box = self._frame_box(d) if view.orthographic else None
        cam = self._camera(view, box)
        tinted = self._tint(marks.highlight)
        try:
            mujoco.mjv_updateScene(
                m, d, self._opt, None, cam, int(mujoco.mjtCatBit.mjCAT_ALL), self._scn
            )
        finally:
            if tinted is not None:
                ids, rgba = tinted
                m.geom_rgba[ids] = rgba
        look.apply(self._scn)
        scale_bar = None
        if box is not None:
            half = _ortho_half_height(box, view, w / h)
            scale_bar = _scale_bar(h / (2 * half), w)
            for i in range(2):
                self._scn.camera[i].frustum_bottom = -half
                self._scn.camera[i].frustum_top = half
            if view is TOP:  # seen face-on, the lit floor would wash out to white
                for i in range(self._scn.nlight):
                    self._scn.lights[i].diffuse[:] = self._scn.lights[i].diffuse * 0.55
        self._decorate(d, marks.highlight, h)
        rect = mujoco.MjrRect(0, 0, w, h)
        mujoco.mjr_render(rect, self._scn, self._con)
        self._hud(rect, float(d.time), marks if hud else None, label, scale_bar)
        buf = self._buf if size is None else np.empty((h, w, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(buf, None, rect, self._con)
        out = np.flipud(buf).copy()
        self.render_s += time.perf_counter() - t0
        return out

    def contact_sheet(self, d: mujoco.MjData, marks: Marks) -> NDArray[np.uint8]:
        """The scene from four sides at once (perspective, front, side, top), 2 × 2."""
        pw = min(self.width, SHEET_PANEL_MAX_W) // 2 * 2
        ph = round(self.height * pw / self.width) // 2 * 2
        panels = [
            self.render(d, v, marks, (pw, ph), label=v.name, hud=v is PERSPECTIVE)
            for v in SHEET_VIEWS
        ]
        gap = np.full((ph, 2, 3), 255, dtype=np.uint8)
        rows = [np.hstack([panels[0], gap, panels[1]]), np.hstack([panels[2], gap, panels[3]])]
        hgap = np.full((2, rows[0].shape[1], 3), 255, dtype=np.uint8)
        return np.vstack([rows[0], hgap, rows[1]])

    # --- pieces ----------------------------------------------------------------------------

    def _camera(
        self, view: View, box: tuple[NDArray[np.float64], NDArray[np.float64]] | None
    ) -> mujoco.MjvCamera:
        if box is None:
            return self._cam
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        lo, hi = box
        cam.lookat[:] = (lo + hi) / 2
        cam.distance = float(np.linalg.norm(hi - lo)) + 0.2
        cam.azimuth, cam.elevation = view.azimuth, view.elevation
        cam.orthographic = 1
        return cam

    def _frame_box(self, d: mujoco.MjData) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """What the orthographic views frame: every zone and every part where it is now, within
        three scene radii of the start (a part that flew off does not shrink the picture)."""
        s = self.scene
        c, r = s.extent_center_m, s.extent_radius_m
        lo, hi = self._box0
        pos, rb = d.geom_xpos[self._all_geoms], self._all_rbound
        ok = np.isfinite(pos).all(axis=1)  # a diverged state is drawn, never framed
        if ok.any():
            pos, rb = pos[ok], rb[ok]
            lo = np.minimum(lo, np.clip((pos - rb).min(axis=0), c - 3 * r, None))
            hi = np.maximum(hi, np.clip((pos + rb).max(axis=0), None, c + 3 * r))
        return lo, hi

    def _tint(
        self, labels: tuple[str, ...]
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
        """Tint the highlighted parts' geoms magenta in the model for one scene update; returns
        what to restore (the model's colours are visual only, and restored at once)."""
        ids = [
            g for lbl in labels if lbl in self.scene.parts for g in self.scene.parts[lbl].geom_ids
        ]
        if not ids:
            return None
        m = self.scene.model
        arr = np.array(ids, dtype=np.int64)
        old = m.geom_rgba[arr].copy()
        magenta = np.array([*HIGHLIGHT_RGB, 1.0], dtype=np.float32)
        m.geom_rgba[arr] = 0.25 * old + 0.75 * magenta
        m.geom_rgba[arr, 3] = 1.0
        return arr, old

    def _add(self) -> mujoco.MjvGeom | None:
        if self._scn.ngeom >= self._scn.maxgeom:
            return None
        g = self._scn.geoms[self._scn.ngeom]
        self._scn.ngeom += 1
        return g

    def _decorate(self, d: mujoco.MjData, highlight: tuple[str, ...], h: int) -> None:
        """Zone outlines, and a halo and an arrow at each highlighted part."""
        line = int(mujoco.mjtGeom.mjGEOM_LINE)
        px = max(1.5, h / 240)  # the base line width in pixels: 2 at 480 px
        for s in self._segments:
            g = self._add()
            if g is None:
                return
            mujoco.mjv_initGeom(g, line, self._zeros3, self._zeros3, self._eye9, s.rgba)
            mujoco.mjv_connector(g, line, s.width * px, s.a, s.b)
            g.castshadow = 0
        r_scene = self.scene.extent_radius_m
        for label in highlight:
            p = self.scene.parts.get(label)
            if p is None:
                continue
            center = d.xipos[p.body_id].copy()
            if not np.isfinite(center).all():  # a diverged part: nowhere to point at
                continue
            r = self._halo_m[label] * 1.25
            haloed = r < 0.35 * r_scene  # a halo around a small part; a large one is tinted only
            if haloed:
                g = self._add()
                if g is None:
                    return
                rgba = np.array([*HIGHLIGHT_RGB, 0.22], dtype=np.float32)
                mujoco.mjv_initGeom(
                    g, int(mujoco.mjtGeom.mjGEOM_SPHERE), np.array([r, r, r]), center,
                    self._eye9, rgba,
                )  # fmt: skip
                g.castshadow = 0
            g = self._add()
            if g is None:
                return
            # Down onto the halo, or onto the centre of mass of a part too large for one (its
            # bounding sphere would put the arrow out of the picture).
            length = max(0.18 * r_scene, 2 * r) if haloed else 0.25 * r_scene
            tip = center + np.array([0.0, 0.0, r * 1.05 if haloed else 0.02 * r_scene])
            top = tip + np.array([0.0, 0.0, length])
            rgba = np.array([*HIGHLIGHT_RGB, 1.0], dtype=np.float32)
            arrow = int(mujoco.mjtGeom.mjGEOM_ARROW)
            mujoco.mjv_initGeom(g, arrow, self._zeros3, self._zeros3, self._eye9, rgba)
            mujoco.mjv_connector(g, arrow, max(self._unit * 3, 0.15 * length / 4), top, tip)
            g.castshadow = 0

    def _text_w(self, text: str, big: bool = False) -> int:
        widths = self._con.charWidthBig if big else self._con.charWidth
        return int(sum(int(widths[ord(c)]) for c in text))

    def _hud(
        self,
        rect: mujoco.MjrRect,
        t: float,
        marks: Marks | None,
        label: str,
        scale_bar: tuple[int, str] | None = None,
    ) -> None:
        """Time (top left), a scale bar in an orthographic view (bottom right), and with
        `marks` the verdict (top right) and the legend (bottom left)."""
        con = self._con
        w, h = rect.width, rect.height
        panels: list[tuple[mujoco.MjrRect, tuple[float, ...]]] = []
        texts: list[tuple[int, str, int, int]] = []

        def panel(x: int, y: int, pw: int, ph: int, rgba: tuple[float, ...]) -> None:
            panels.append((mujoco.MjrRect(x, y, pw, ph), rgba))

        def text(font: int, s: str, x: int, y: int, rgb: tuple[float, float, float]) -> None:
            texts.append((font, s, x, y))

        try:
            self._hud_items(panel, text, t, marks, label, scale_bar, w, h)
        finally:
            # mjr_text places text relative to the last viewport, which mjr_rectangle sets to
            # its own rectangle. So each text is drawn right after the first panel that holds
            # it, relative to that panel: no viewport of the whole picture is needed, which
            # only an invisible full-frame rectangle could set, at ~1 ms a frame on llvmpipe.
            inside: dict[int, list[tuple[int, str, float, float]]] = {}
            loose: list[tuple[int, str, float, float]] = []
            for font, s, x, y in texts:
                for i, (r, _) in enumerate(panels):
                    if r.left <= x < r.left + r.width and r.bottom <= y < r.bottom + r.height:
                        rel = ((x - r.left) / r.width, (y - r.bottom) / r.height)
                        inside.setdefault(i, []).append((font, s, *rel))
                        break
                else:
                    loose.append((font, s, x / w, y / h))
            for i, (r, rgba) in enumerate(panels):
                mujoco.mjr_rectangle(r, *rgba)
                for font, s, rx, ry in inside.get(i, []):
                    mujoco.mjr_text(font, s, con, rx, ry, 1.0, 1.0, 1.0)
            if loose:
                mujoco.mjr_rectangle(mujoco.MjrRect(0, 0, w, h), 0, 0, 0, 0)
                for font, s, rx, ry in loose:
                    mujoco.mjr_text(font, s, con, rx, ry, 1.0, 1.0, 1.0)

    def _hud_items(
        self,
        panel: Callable[[int, int, int, int, tuple[float, ...]], None],
        text: Callable[[int, str, int, int, tuple[float, float, float]], None],
        t: float,
        marks: Marks | None,
        label: str,
        scale_bar: tuple[int, str] | None,
        w: int,
        h: int,
    ) -> None:
        con = self._con
        ch, chb = int(con.charHeight), int(con.charHeightBig)
        pad = max(3, ch // 3)
        normal, big = int(mujoco.mjtFont.mjFONT_NORMAL), int(mujoco.mjtFont.mjFONT_BIG)

        white = (1.0, 1.0, 1.0)
        clock = _ascii(f"{label}  t = {t:.3f} s" if label else f"t = {t:.3f} s")
        tw = self._text_w(clock)
        panel(pad, h - ch - 3 * pad, tw + 2 * pad, ch + 2 * pad, PANEL_RGBA)
        text(normal, clock, 2 * pad, h - ch - 2 * pad + ch // 5, white)
        if scale_bar is not None:
            px, caption = scale_bar
            sw = max(px, self._text_w(caption)) + 2 * pad
            x0 = w - sw - pad
            panel(x0, pad, sw, ch + 3 * pad + 4, PANEL_RGBA)
            panel(x0 + pad, 2 * pad, px, 4, (1.0, 1.0, 1.0, 1.0))
            text(normal, caption, x0 + pad, 2 * pad + 6 + ch // 5, white)
        if marks is None:
            return

        b = marks.banner
        if b is not None:
            head = "SUCCESS" if b.failure is None else "FAIL"
            lines = [_ascii(f"{b.failure or 'decided'} at t = {b.time_s:.2f} s")]
            if b.parts:
                lines.append(_ascii(", ".join(b.parts)))
            if b.run:
                lines.append(_ascii(b.run))
            bw = max(self._text_w(head, big=True), *(self._text_w(x) for x in lines)) + 2 * pad
            bh = chb + len(lines) * ch + 2 * pad
            x0, y0 = w - bw - pad, h - bh - pad
            panel(x0, y0, bw, bh, SUCCESS_RGBA if b.failure is None else FAIL_RGBA)
            text(big, head, x0 + pad, y0 + bh - pad - chb + chb // 5, white)
            for i, line in enumerate(lines):
                text(normal, line, x0 + pad, y0 + bh - pad - chb - (i + 1) * ch + ch // 5, white)

        rows: list[tuple[tuple[float, float, float], str]] = [
            (ZONE_RGBA[kind][:3], _ascii(f"{kind}: {names}", MAX_TEXT))
            for kind, names in self._legend
        ]
        if marks.highlight:
            who = "target" if b is not None and b.failure is None else "culprit"
            rows.append((HIGHLIGHT_RGB, _ascii(f"{who}: {', '.join(marks.highlight)}")))
        if rows:
            lw = max(self._text_w(s) for _, s in rows) + ch + 3 * pad
            lh = len(rows) * ch + 2 * pad
            panel(pad, pad, lw, lh, PANEL_RGBA)
            for i, (rgb, s) in enumerate(rows):
                y = pad + lh - pad - (i + 1) * ch
                panel(2 * pad, y + ch // 6, ch * 2 // 3 + 2, ch * 2 // 3 + 2, (1, 1, 1, 1))
                panel(2 * pad + 1, y + ch // 6 + 1, ch * 2 // 3, ch * 2 // 3, (*rgb, 1.0))
                text(normal, s, 3 * pad + ch, y + ch // 5, white)

    def close(self) -> None:
        try:
            self._gl.make_current()
            self._con.free()
        finally:
            self._gl.free()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class VideoError(InfrastructureError):
    """The H.264 encoder failed (the worker's own fault: its codec, its disk)."""

    cause = "render"


QUEUE_FRAMES = 8
"""Frames rendered ahead of the encoder at most (8 × 640 × 480 × 3 B = 7.4 MB). A renderer
faster than the encoder waits for it rather than growing the queue."""
_END = None


class VideoWriter:
    """H.264 (yuv420p) MP4 writer fed one RGB frame at a time, encoding on a thread of its own.

    `write` hands a frame to a bounded queue (it blocks only while the queue is full) and an
    encoder thread converts, encodes and muxes it, so rendering and encoding overlap. Nothing
    is dropped: every written frame is in the file once `close` returned. An encoder error is
    raised (as VideoError, with its cause) by the next `write` or by `close`; after one, the
    thread keeps draining the queue so no `write` blocks forever. `close` writes the stream's
    tail and joins the thread; `abort` (a run that failed or was cancelled) joins it without
    finishing the file. Either way no thread outlives the writer."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = path
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        # 'veryfast' keeps encoding well under rendering cost; crf 23 is x264's visual default.
        self._stream.options = {"preset": "veryfast", "crf": "23"}
        # One thread: this writer's own, beside the renderer's. x264's frame threads would
        # only compete with llvmpipe's for the same cores (~1.4 ms of CPU a 640 × 480 frame).
        self._stream.thread_count = 1
        self.frames = 0
        self.encode_s = 0.0
        """Seconds the caller spent in `write` and `close`: waiting for the encoder."""
        self.encoder_s = 0.0
        """Seconds the encoder thread spent encoding and muxing (overlapping the render)."""
        self._queue: queue.Queue[NDArray[np.uint8] | None] = queue.Queue(QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._encode_all, name="h264", daemon=True)
        self._thread.start()
        self._open = True

    def _encode_all(self) -> None:
        while True:
            rgb = self._queue.get()
            if rgb is _END:
                break
            if self._error is not None or self._abort.is_set():
                continue  # drain: a writer never blocks on a queue nobody empties
            t0 = time.perf_counter()
            try:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            except BaseException as e:  # raised in the caller's thread, by write or close
                self._error = e
            self.encoder_s += time.perf_counter() - t0
        if self._error is None and not self._abort.is_set():
            t0 = time.perf_counter()
            try:
                for packet in self._stream.encode():  # the encoder's tail
                    self._container.mux(packet)
            except BaseException as e:
                self._error = e
            self.encoder_s += time.perf_counter() - t0

    def _raise(self) -> None:
        e = self._error
        if e is not None:
            raise VideoError(f"the video could not be encoded: {type(e).__name__}: {e}") from e

    def write(self, rgb: NDArray[np.uint8]) -> None:
        """Queue one frame (the writer keeps `rgb`: pass a picture nobody writes to again)."""
        if not self._open:
            raise VideoError("the video is closed")
        self._raise()
        t0 = time.perf_counter()
        self._queue.put(rgb)
        self.frames += 1
        self.encode_s += time.perf_counter() - t0

    def _finish(self, abort: bool) -> None:
        if not self._open:
            return
        self._open = False
        if abort:
            self._abort.set()
        t0 = time.perf_counter()
        self._queue.put(_END)
        self._thread.join()
        try:
            self._container.close()
        except BaseException as e:
            if self._error is None:
                self._error = e
        self.encode_s += time.perf_counter() - t0

    def close(self) -> None:
        """Every frame encoded and the file finished; raises VideoError if any of it failed."""
        self._finish(abort=False)
        self._raise()

    def abort(self) -> None:
        """Stop encoding and join the thread (the file is left unfinished). Never raises."""
        self._finish(abort=True)


@dataclass
class Stills:
    """The decisive moment of one run: the poster and the contact sheet."""

    poster: NDArray[np.uint8]
    sheet: NDArray[np.uint8]
    time_s: float


class Recorder:
    """The callbacks of one rendered run: `frame` (on_frame) writes the video, `decided`
    (on_decision) takes the stills of the decisive moment and highlights the culprit from then
    on, `ended` (on_end) takes the last frame. Without a video path only stills are taken (a
    perturbed run). Use as a context manager (it closes the video, not the renderer)."""

    def __init__(
        self, renderer: Renderer, video_path: Path | None, fps: int, run_label: str = ""
    ) -> None:
        self.renderer = renderer
        self.run_label = run_label
        self._writer = (
            VideoWriter(video_path, renderer.width, renderer.height, fps) if video_path else None
        )
        self.marks = Marks()
        self.stills: Stills | None = None
        self.last: NDArray[np.uint8] | None = None

    def frame(self, d: mujoco.MjData) -> None:
        assert self._writer is not None
        self._writer.write(self.renderer.render(d, PERSPECTIVE, self.marks, look=VIDEO_LOOK))

    def decided(self, d: mujoco.MjData, decision: Decision) -> None:
        self.marks = Marks(Banner.of(decision, self.run_label))
        self.stills = Stills(
            poster=self.renderer.render(d, PERSPECTIVE, self.marks),
            sheet=self.renderer.contact_sheet(d, self.marks),
            time_s=decision.time_s,
        )

    def ended(self, d: mujoco.MjData, decision: Decision) -> None:
        self.last = self.renderer.render(d, PERSPECTIVE, Marks(Banner.of(decision, self.run_label)))

    @property
    def frames(self) -> int:
        return self._writer.frames if self._writer else 0

    @property
    def encode_s(self) -> float:
        return self._writer.encode_s if self._writer else 0.0

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()

    def close(self) -> None:
        """The video finished (every frame encoded); raises VideoError if encoding failed."""
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        """A run that ended in an exception (a limit, a cancel): the encoder thread joined, the
        video left unfinished."""
        if self._writer is not None:
            self._writer.abort()


def write_png(path: Path, rgb: np.ndarray) -> None:
    with av.open(str(path), mode="w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height = rgb.shape[1], rgb.shape[0]
        s.pix_fmt = "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)

"""The plots of a run as one SVG document: what decided it, over simulated time.

Our own small code, no plotting library: a panel per quantity (the target's distance to the goal
and its hold, part speeds, the largest contact force, energy, each actuator's effort against its
limit), a shared time axis and the moment of the decision marked in each. Pure text from numbers
(`series.Series`); every label is XML-escaped (part and actuator labels come from the design).
The output depends only on the series, so the same run gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from numpy.typing import NDArray

from worker.simulation.series import MAX_LINES, Column, Series

WIDTH = 760
PANEL_H = 180
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 28, 34
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
DECISION_COLOUR = "#c00000"


@dataclass(frozen=True)
class _Panel:
    title: str
    lines: list[tuple[str, NDArray[np.float64]]]
    threshold: tuple[float, str] | None = None
    note: str = ""


def _strongest(
    lines: list[tuple[Column, NDArray[np.float64]]], keep: int
) -> tuple[list[tuple[str, NDArray[np.float64]]], str]:
    """The `keep` lines with the largest peaks (ties by label), and a note on the others."""

    def peak(v: NDArray[np.float64]) -> float:
        f = v[np.isfinite(v)]
        return float(f.max()) if f.size else -math.inf

    ranked = sorted(lines, key=lambda cv: (-peak(cv[1]), cv[0].name))
    shown = sorted(ranked[:keep], key=lambda cv: cv[0].name)
    hidden = len(ranked) - len(shown)
    note = f"+{hidden} more with lower peaks not shown" if hidden > 0 else ""
    return [(c.name, v) for c, v in shown], note


def _panels(s: Series) -> list[_Panel]:
    out: list[_Panel] = []
    goal = s.group("goal")
    if goal:
        out.append(_Panel("Target's distance to the goal (mm)", [(c.name, v) for c, v in goal]))
    hold = s.group("hold")
    if hold:
        need = s.goal_hold_s or 0.0
        out.append(
            _Panel(
                "Target's time held in the goal (s)",
                [(c.name, v) for c, v in hold],
                threshold=(need, f"needed: {need:g} s"),
            )
        )
    speed = s.group("speed")
    if speed:
        lines, note = _strongest(speed, MAX_LINES)
        out.append(_Panel("Part speeds (mm/s)", lines, note=note))
    out.append(_Panel("Largest contact force (N)", [(c.name, v) for c, v in s.group("force")]))
    out.append(_Panel("Energy (J)", [(c.name, v) for c, v in s.group("energy")]))
    effort = s.group("effort")
    if effort:
        lines, note = _strongest(effort, MAX_LINES)
        out.append(
            _Panel(
                "Actuator effort (% of its force limit)",
                lines,
                threshold=(100.0, "force limit"),
                note=note,
            )
        )
    return out


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(k * mag for k in (1, 2, 5, 10) if k * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v < hi + step * 0.999:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _num(v: float) -> str:
    """A tick label: short and exact for round values (0.5, 20, 1e+06)."""
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.6g}"


def _polyline(xs: Sequence[float], ys: Sequence[float]) -> list[str]:
    """Points of each unbroken run of finite values (a NaN breaks the line)."""
    runs: list[str] = []
    cur: list[str] = []
    for x, y in zip(xs, ys, strict=True):
        if math.isfinite(y):
            cur.append(f"{x:.1f},{y:.1f}")
        elif cur:
            runs.append(" ".join(cur))
            cur = []
    if cur:
        runs.append(" ".join(cur))
    return runs


def plots_svg(s: Series, decision: tuple[float, str] | None) -> str:
    """Every panel of `s`, stacked, as one standalone SVG document; `decision` (time, name)
    is marked in each panel."""
    panels = _panels(s)
    height = len(panels) * PANEL_H + 10
    t = s.t
    t_max = float(t[-1]) if t.size else 1.0
    t_max = max(t_max, decision[0] if decision else 0.0, 1e-3)
    x_ticks = nice_ticks(0.0, t_max, target=7)
    x_hi = x_ticks[-1]
    pw = WIDTH - LEFT - RIGHT
    ph = PANEL_H - TOP - BOTTOM

    def x_of(v: float) -> float:
        return LEFT + pw * v / x_hi

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif" '
        'font-size="11" role="img">',
        "<title>What decided the run, over simulated time</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    for k, p in enumerate(panels):
        y0 = k * PANEL_H + TOP
        vals = [v[np.isfinite(v)] for _, v in p.lines]
        finite = np.concatenate(vals) if vals else np.zeros(0)
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        if p.threshold is not None:
            hi = max(hi, p.threshold[0])
        y_ticks = nice_ticks(lo, hi if hi > lo else lo + 1.0)
        y_lo, y_hi = y_ticks[0], y_ticks[-1]

        def y_of(v: float, y0: float = y0, y_lo: float = y_lo, y_hi: float = y_hi) -> float:
            return y0 + ph - ph * (v - y_lo) / (y_hi - y_lo)

        out.append(
            f'<text x="{LEFT}" y="{y0 - 9}" font-size="13" font-weight="bold">'
            f"{escape(p.title)}</text>"
        )
        out.append(
            f'<rect x="{LEFT}" y="{y0}" width="{pw}" height="{ph}" fill="#fafafa" '
            'stroke="#999999" stroke-width="1"/>'
        )
        for yt in y_ticks:
            yy = y_of(yt)
            out.append(
                f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}" '
                'stroke="#e3e3e3" stroke-width="1"/>'
            )
            out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{_num(yt)}</text>')
        for xt in x_ticks:
            xx = x_of(xt)
            out.append(
                f'<line x1="{xx:.1f}" y1="{y0}" x2="{xx:.1f}" y2="{y0 + ph}" '
                'stroke="#eeeeee" stroke-width="1"/>'
            )
            out.append(
                f'<text x="{xx:.1f}" y="{y0 + ph + 14}" text-anchor="middle">{_num(xt)}</text>'
            )
        out.append(
            f'<text x="{LEFT + pw}" y="{y0 + ph + 28}" text-anchor="end" fill="#555555">'
            "simulated time (s)</text>"
        )
        if p.threshold is not None:
            yy = y_of(p.threshold[0])
            out.append(
                f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}" '
                'stroke="#333333" stroke-width="1" stroke-dasharray="6 4"/>'
            )
            out.append(
                f'<text x="{LEFT + 4}" y="{yy - 4:.1f}" fill="#333333">'
                f"{escape(p.threshold[1])}</text>"
            )
        xs = [x_of(float(v)) for v in t]
        for i, (name, v) in enumerate(p.lines):
            colour = PALETTE[i % len(PALETTE)]
            ys = [y_of(float(c)) if math.isfinite(c) else math.nan for c in v]
            for pts in _polyline(xs, ys):
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" '
                    f'stroke-linejoin="round" points="{pts}"/>'
                )
            ly = y0 + 10 + i * 15
            out.append(
                f'<line x1="{LEFT + pw + 10}" y1="{ly - 4}" x2="{LEFT + pw + 28}" '
                f'y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>'
            )
            out.append(f'<text x="{LEFT + pw + 33}" y="{ly}">{escape(_short(name))}</text>')
        if p.note:
            ly = y0 + 10 + len(p.lines) * 15
            out.append(
                f'<text x="{LEFT + pw + 10}" y="{ly}" fill="#777777" font-size="10">'
                f"{escape(p.note)}</text>"
            )
        if decision is not None:
            xx = x_of(decision[0])
            out.append(
                f'<line x1="{xx:.1f}" y1="{y0}" x2="{xx:.1f}" y2="{y0 + ph}" '
                f'stroke="{DECISION_COLOUR}" stroke-width="1.5" stroke-dasharray="4 3"/>'
            )
            anchor = "end" if xx > LEFT + pw * 0.6 else "start"
            dx = -4 if anchor == "end" else 4
            out.append(
                f'<text x="{xx + dx:.1f}" y="{y0 + 12}" text-anchor="{anchor}" '
                f'fill="{DECISION_COLOUR}">{escape(decision[1])} at {decision[0]:.2f} s</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(label: str, limit: int = 22) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"

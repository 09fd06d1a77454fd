"""The reports of a result, what a person reads first: `report.md` (text) and `report.html` (one
self-contained page: the verdict, the decisive moment, the video, the rules that fired, the plots,
the parts). Pure text from the result and the files' bytes; no MuJoCo.

A design controls some of this text (part labels, and the reason, which may quote the design's
own error message): every such string is escaped for where it goes, Markdown (`md`) or HTML
(`html.escape`), so `<h1>`, `<img onerror=…>` or a `[link](javascript:…)` shows as text and
never as markup. report.html also carries a Content-Security-Policy that allows no script, no
request and no image but its own embedded ones, so even a missed escape could not run code.
Images and the video are embedded as `data:` URIs (`<img>` never runs script in an SVG); only
a video above `VIDEO_EMBED_MAX_BYTES` is linked instead.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlparse

VIDEO_EMBED_MAX_BYTES = 8 * 1024 * 1024
"""A larger video is linked from report.html instead of embedded."""
LINK_SCHEMES = ("file", "http", "https")
"""The only links a report carries (artifact URLs of the store); anything else is dropped."""

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+!|~&$])")


def md(text: object) -> str:
    """`text` as literal Markdown on one line: every character CommonMark or GFM could read as
    markup (emphasis, links, images, raw HTML, entities, code, table pipes) is backslash-escaped,
    and line breaks become spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def safe_url(url: object) -> str | None:
    """`url` when it is a link a report may carry (file, http, https), else None."""
    if not isinstance(url, str) or any(c in url for c in "<>\"'\n\r\t`\\"):
        return None
    try:
        scheme = urlparse(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in LINK_SCHEMES else None


_SIBLING = re.compile(r"^[a-z_]+\.(?:mp4|png|svg|html|md|xml|json|txt)$")


def _sibling(url: object) -> str | None:
    """The file name of an artifact URL, for a relative link from report.md (which sits next to
    every artifact of its run, in a local directory as in a bucket)."""
    if safe_url(url) is None:
        return None
    name = urlparse(str(url)).path.rsplit("/", 1)[-1]
    return name if _SIBLING.match(name) else None


def _f(v: Any, fmt: str, unit: str = "") -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return "–"
    return f"{v:{fmt}}{unit}"


def _vec(v: Any) -> str:
    if not isinstance(v, list | tuple):
        return "–"
    cells = (_f(c, ".1f") for c in v)
    return ", ".join("0.0" if c == "-0.0" else c for c in cells)  # -0.0: a rounded 0


def _verdict_line(result: Mapping[str, Any]) -> tuple[str, str]:
    """(head, reason): `FAIL — FORBID_ZONE_HIT` and the reason sentence (not escaped)."""
    head = str(result.get("outcome", ""))
    if result.get("failure"):
        head += f" — {result['failure']}"
    return head, str(result.get("reason", ""))


def _runs(m: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    runs = m.get("runs")
    return [r for r in runs if isinstance(r, Mapping)] if isinstance(runs, list) else []


def _decisive_run(m: Mapping[str, Any]) -> Mapping[str, Any] | None:
    runs = _runs(m)
    return next((r for r in runs if r.get("failure")), runs[0] if runs else None)


# --- Markdown ---------------------------------------------------------------------------------


def report_markdown(result: dict[str, Any], request_id: str) -> str:
    """A human-readable summary of a SimulationResult (as a dict)."""
    m = result.get("metrics", {})
    head, reason = _verdict_line(result)
    lines = [f"# simjail run {md(request_id)}", "", f"**{md(head)}**: {md(reason)}", ""]
    decisive = _decisive_run(m)
    if decisive is not None and decisive.get("decided_at_s") is not None:
        who = ", ".join(md(p) for p in decisive.get("culprits") or [])
        lines += [
            f"Decided at t = {_f(decisive['decided_at_s'], '.3f', ' s')}"
            + (f" (part: {who})" if who else "")
            + ("" if not decisive.get("run") else f" in perturbed run {decisive['run']}")
            + ".",
            "",
        ]
    urls = result.get("artifact_urls") or {}
    links = [
        f"[{label}]({name})"
        for key, label in (
            ("report_html", "report.html"),
            ("video", "video"),
            ("poster", "poster (decisive moment)"),
            ("contact_sheet", "contact sheet"),
            ("plots", "plots"),
            ("last_frame", "last frame"),
        )
        if (name := _sibling(urls.get(key)))
    ]
    if links:
        lines += ["Artifacts (next to this file): " + " · ".join(links), ""]
    warnings = m.get("warnings") or []
    if warnings:  # sentences that may name parts: escaped like everything else
        lines += ["Warnings:", "", *(f"- {md(w)}" for w in warnings), ""]
    lines += [
        "| time | value |",
        "| --- | --- |",
        f"| simulated | {_f(m.get('sim_time_s', 0), '.3f')} s in {m.get('steps', 0)} steps |",
        f"| wall | {_f(m.get('wall_time_s', 0), '.2f')} s (real-time factor "
        f"{_f(m.get('real_time_factor', 0), '.1f')}) |",
    ]
    for phase, s in (m.get("phases_s") or {}).items():
        lines.append(f"| {md(phase)} | {_f(s, '.3f')} s |")
    parts = m.get("parts") or {}
    if parts:
        lines += [
            "",
            "## Parts",
            "",
            "| part | mass (kg) | start (mm) | end (mm) | max speed (mm/s) |",
            "| --- | ---: | --- | --- | ---: |",
        ]
        for label, p in parts.items():
            lines.append(
                f"| {md(label)} | {_f(p.get('mass_kg'), '.4g')} | "
                f"{_vec(p.get('initial_position_mm'))} | {_vec(p.get('final_position_mm'))} | "
                f"{_f(p.get('max_speed_mm_s'), '.0f')} |"
            )
    goal = m.get("goal")
    if goal:
        lines += [
            "",
            "## Goal",
            "",
            f"reached: {goal.get('reached')}, longest hold {_f(goal.get('hold_s'), '.2f')} s, "
            f"closest approach {_f(goal.get('min_distance_mm'), '.1f')} mm",
        ]
    runs = _runs(m)
    fired = [(r, e) for r in runs for e in (r.get("events") or []) if isinstance(e, Mapping)]
    if fired:
        lines += [
            "",
            "## Rules that fired",
            "",
            "| run | t (s) | rule | parts | counted | reason |",
            "| ---: | ---: | --- | --- | --- | --- |",
        ]
        for r, e in fired:
            lines.append(
                f"| {r.get('run', 0)} | {_f(e.get('t_s'), '.3f')} | {md(e.get('rule', ''))} | "
                f"{md(', '.join(str(p) for p in e.get('parts') or []))} | "
                f"{'decision' if e.get('decisive') else 'after the decision'} | "
                f"{md(e.get('reason', ''))} |"
            )
    if len(runs) > 1:
        lines += ["", "## Runs", "", "| run | outcome | reason |", "| --- | --- | --- |"]
        for r in runs:
            lines.append(f"| {r.get('run')} | {md(r.get('outcome'))} | {md(r.get('reason'))} |")
    lines += [
        "",
        "## Versions",
        "",
        md(", ".join(f"{k} {v}" for k, v in (result.get("versions") or {}).items())),
        "",
    ]
    return "\n".join(lines)


# --- HTML -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """The bytes report.html embeds (each already capped by the store's copy-out)."""

    poster: bytes | None = None
    contact_sheet: bytes | None = None
    plots: bytes | None = None
    video: bytes | None = None


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_START = b'<svg xmlns="http://www.w3.org/2000/svg"'

CSP = (
    "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0;color:#1d1d1f;background:#f4f5f7}
main{max-width:1320px;margin:0 auto;padding:20px 24px 40px}
header.verdict{border-radius:10px;padding:16px 20px;color:#fff;margin-bottom:18px}
header.fail{background:#a61b1b}header.success{background:#17663a}
header h1{margin:0 0 6px;font-size:26px}header p{margin:4px 0;font-size:16px}
header .facts{opacity:.9;font-size:14px}
h2{font-size:19px;margin:28px 0 10px}
section{background:#fff;border-radius:10px;padding:14px 18px;margin:14px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.media{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.media figure{flex:1 1 420px;max-width:640px}.media img,.media video{width:100%}
figure{margin:0}figcaption{color:#555;font-size:13px;margin-top:4px}
img,video{max-width:100%;height:auto;border:1px solid #ddd;border-radius:6px;background:#fff}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e6e6;vertical-align:top}
th{background:#f0f1f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.decisive td{background:#fff3cd;font-weight:600}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;background:#e619c4;
color:#fff}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px}
footer{color:#666;font-size:12px;margin-top:24px;word-break:break-all}
"""


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _img(data: bytes | None, kind: str, alt: str, caption: str, width: int | None = None) -> str:
    if data is None:
        return ""
    ok = data.startswith(PNG_MAGIC) if kind == "image/png" else data.lstrip().startswith(SVG_START)
    if not ok:  # not what it claims to be: leave it out rather than show a broken image
        return ""
    w = f' width="{width}"' if width else ""
    return (
        f'<figure><img src="{_data_uri(kind, data)}" alt="{_e(alt)}"{w}>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _video(data: bytes | None, url: str | None, width: int) -> str:
    if data is not None and len(data) <= VIDEO_EMBED_MAX_BYTES and data[4:8] == b"ftyp":
        return (
            f'<figure><video controls muted loop playsinline preload="metadata" width="{width}" '
            f'src="{_data_uri("video/mp4", data)}"></video>'
            "<figcaption>The video: zones by kind, simulated time, the verdict and the culprit "
            "from the decision on.</figcaption></figure>"
        )
    if url is not None:
        return f'<p>Video: <a href="{_e(url)}">{_e(url)}</a></p>'
    return ""


def _table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """A table of already-escaped cells; a header starting with '#' is a numeric column."""
    num = [h.startswith("#") for h in head]
    ths = "".join(
        f"<th{' class=num' if n else ''}>{h.lstrip('#')}</th>"
        for h, n in zip(head, num, strict=True)
    )
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        tds = "".join(
            f"<td{' class=num' if n else ''}>{c}</td>" for c, n in zip(r, num, strict=True)
        )
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def report_html(result: dict[str, Any], request_id: str, media: Media, width: int = 640) -> str:
    """One self-contained HTML page for a SimulationResult (as a dict)."""
    m = result.get("metrics") or {}
    head, reason = _verdict_line(result)
    ok = result.get("outcome") == "SUCCESS"
    urls = result.get("artifact_urls") or {}
    decisive = _decisive_run(m)
    culprits = [str(p) for p in (decisive or {}).get("culprits") or []]
    facts = []
    if decisive is not None and decisive.get("decided_at_s") is not None:
        facts.append(f"decided at t = {_f(decisive['decided_at_s'], '.3f', ' s')}")
        if decisive.get("run"):
            facts.append(f"in perturbed run {_e(decisive['run'])}")
    if culprits:
        facts.append(("target" if ok else "culprit") + ": " + _e(", ".join(culprits)))
    facts.append(f"simulated {_f(m.get('sim_time_s'), '.2f', ' s')}")
    facts.append(f"wall {_f(m.get('wall_time_s'), '.2f', ' s')}")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(head)} · simjail {_e(request_id)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f'<header class="verdict {"success" if ok else "fail"}">',
        f"<h1>{_e(head)}</h1><p>{_e(reason)}</p>",
        f'<p class="facts">{" · ".join(facts)}</p>',
        f'<p class="facts">simjail run <code>{_e(request_id)}</code></p></header>',
    ]
    poster = _img(
        media.poster,
        "image/png",
        f"The decisive moment: {head}",
        "The decisive moment" + (f", {', '.join(culprits)} highlighted" if culprits else ""),
        width,
    )
    video = _video(media.video, safe_url(urls.get("video")), width)
    if poster or video:
        out += [
            "<section><h2>The decisive moment</h2>",
            f'<div class="media">{poster}{video}</div>',
        ]
        out.append("</section>")
    fired = [(r, e) for r in _runs(m) for e in (r.get("events") or []) if isinstance(e, Mapping)]
    if fired:
        rows, classes = [], []
        for r, e in fired:
            rows.append(
                [
                    _e(r.get("run", 0)),
                    _f(e.get("t_s"), ".3f"),
                    f"<code>{_e(e.get('rule', ''))}</code>",
                    _e(", ".join(str(p) for p in e.get("parts") or [])),
                    "the decision" if e.get("decisive") else "after the decision (not counted)",
                    _e(e.get("reason", "")),
                ]
            )
            classes.append("decisive" if e.get("decisive") and r is decisive else "")
        out += [
            "<section><h2>Rules that fired, and when</h2>",
            _table(["#run", "#t (s)", "rule", "parts", "counted", "reason"], rows, classes),
            "</section>",
        ]
    plots = _img(
        media.plots,
        "image/svg+xml",
        "Plots over simulated time: distance to the goal, hold, part speeds, contact force, "
        "energy, actuator effort",
        "What decided the run, over simulated time (the dashed red line is the decision)",
    )
    if plots:
        out += ["<section><h2>Over time</h2>", plots, "</section>"]
    sheet = _img(
        media.contact_sheet,
        "image/png",
        "The decisive moment from four sides: perspective, front, side and top",
        "Perspective, front (looking along +y), side (looking along −x) and top, at the "
        "decisive moment",
    )
    if sheet:
        out += ["<section><h2>From four sides</h2>", sheet, "</section>"]
    parts = m.get("parts") or {}
    if isinstance(parts, Mapping) and parts:
        rows = []
        for label, p in parts.items():
            if not isinstance(p, Mapping):
                continue
            tag = ' <span class="tag">culprit</span>' if str(label) in culprits and not ok else ""
            rows.append(
                [
                    _e(label) + tag,
                    _f(p.get("mass_kg"), ".4g"),
                    _vec(p.get("initial_position_mm")),
                    _vec(p.get("final_position_mm")),
                    _f(p.get("max_speed_mm_s"), ".0f"),
                ]
            )
        out += [
            "<section><h2>Parts</h2>",
            _table(["part", "#mass (kg)", "start (mm)", "end (mm)", "#max speed (mm/s)"], rows),
            "</section>",
        ]
    out.append(_numbers_html(m))
    runs = _runs(m)
    if len(runs) > 1:
        rows = [
            [
                _e(r.get("run")),
                _e(r.get("outcome")),
                _e(r.get("failure") or ""),
                _e(r.get("reason")),
            ]
            for r in runs
        ]
        out += [
            "<section><h2>Runs</h2>",
            _table(["#run", "outcome", "failure", "reason"], rows),
            "</section>",
        ]
    links = [
        f'<li><a href="{_e(url)}">{_e(_sibling(url) or name)}</a> <small>({_e(name)})</small></li>'
        for name, raw in sorted(urls.items())
        if (url := safe_url(raw))
    ]
    if links:
        out += ["<section><h2>Artifacts</h2><ul>", *links, "</ul></section>"]
    versions = ", ".join(f"{k} {v}" for k, v in (result.get("versions") or {}).items())
    out += [
        f"<footer>{_e(versions)}<br>policy digest <code>{_e(result.get('policy_digest', ''))}"
        "</code></footer>",
        "</main></body></html>",
        "",
    ]
    return "\n".join(out)


def _numbers_html(m: Mapping[str, Any]) -> str:
    rows: list[list[str]] = []
    goal = m.get("goal")
    if isinstance(goal, Mapping):
        rows.append(["goal reached", _e(goal.get("reached"))])
        if goal.get("reached_at_s") is not None:
            rows.append(["first inside the goal at", _f(goal.get("reached_at_s"), ".3f", " s")])
        rows.append(["longest hold in the goal", _f(goal.get("hold_s"), ".3f", " s")])
        rows.append(["closest approach", _f(goal.get("min_distance_mm"), ".1f", " mm")])
    energy = m.get("energy_j")
    if isinstance(energy, Mapping):
        rows.append(
            [
                "energy (initial → final, max kinetic)",
                f"{_f(energy.get('initial'), '.4g')} → {_f(energy.get('final'), '.4g')} J, "
                f"{_f(energy.get('max_kinetic'), '.4g')} J",
            ]
        )
    rows.append(["largest contact force", _f(m.get("max_contact_force_n"), ".4g", " N")])
    mujoco_warnings = m.get("mujoco_warnings")
    if isinstance(mujoco_warnings, Mapping) and mujoco_warnings:
        rows.append(
            ["MuJoCo warnings", _e(", ".join(f"{k}: {v}" for k, v in mujoco_warnings.items()))]
        )
    warnings = m.get("warnings")
    if isinstance(warnings, list) and warnings:
        rows.append(["warnings", "<br>".join(_e(w) for w in warnings)])
    rows.append(
        [
            "simulated",
            f"{_f(m.get('sim_time_s'), '.3f', ' s')} in {_e(m.get('steps', 0))} steps, "
            f"{_e(m.get('frames', 0))} video frames",
        ]
    )
    phases = m.get("phases_s")
    if isinstance(phases, Mapping):
        rows.append(
            [
                "wall time",
                f"{_f(m.get('wall_time_s'), '.2f', ' s')} ("
                + ", ".join(f"{_e(k)} {_f(v, '.2f', ' s')}" for k, v in phases.items())
                + f"), real-time factor {_f(m.get('real_time_factor'), '.1f')}",
            ]
        )
    return "<section><h2>Numbers</h2>" + _table(["quantity", "value"], rows) + "</section>"

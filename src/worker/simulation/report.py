"""The Markdown report of a result: what a person reads first. Pure text; no MuJoCo."""

from __future__ import annotations

from typing import Any


def report_markdown(result: dict[str, Any], request_id: str) -> str:
    """A human-readable summary of a SimulationResult (as a dict)."""
    m = result.get("metrics", {})
    lines = [
        f"# simjail run `{request_id}`",
        "",
        f"**{result['outcome']}**"
        + (f" — `{result['failure']}`" if result.get("failure") else "")
        + f": {result['reason']}",
        "",
    ]
    if result.get("video_url"):
        lines += [f"Video: {result['video_url']}", ""]
    warnings = m.get("warnings") or []
    if warnings:  # trusted sentences (geometry.warnings, collision.Decomposer)
        lines += ["Warnings:", "", *(f"- {w}" for w in warnings), ""]
    lines += [
        "| time | value |",
        "| --- | --- |",
        f"| simulated | {m.get('sim_time_s', 0):.3f} s in {m.get('steps', 0)} steps |",
        f"| wall | {m.get('wall_time_s', 0):.2f} s (real-time factor "
        f"{m.get('real_time_factor', 0):.1f}) |",
    ]
    for phase, s in (m.get("phases_s") or {}).items():
        lines.append(f"| {phase} | {s:.3f} s |")
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
            start = ", ".join(f"{c:.1f}" for c in p["initial_position_mm"])
            end = ", ".join(f"{c:.1f}" for c in p["final_position_mm"])
            lines.append(
                f"| {label} | {p['mass_kg']:.4g} | {start} | {end} | {p['max_speed_mm_s']:.0f} |"
            )
    goal = m.get("goal")
    if goal:
        lines += [
            "",
            "## Goal",
            "",
            f"reached: {goal['reached']}, longest hold {goal['hold_s']:.2f} s, "
            f"closest approach {goal['min_distance_mm']:.1f} mm",
        ]
    runs = m.get("runs") or []
    if len(runs) > 1:
        lines += ["", "## Runs", "", "| run | outcome | reason |", "| --- | --- | --- |"]
        for r in runs:
            lines.append(f"| {r['run']} | {r['outcome']} | {r['reason']} |")
    lines += [
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in (result.get("versions") or {}).items()),
        "",
    ]
    return "\n".join(lines)

"""The Markdown report: the verdict, the parts and the timings, as a person reads them."""

from __future__ import annotations

from worker.simulation.report import report_markdown


def test_report_names_verdict_parts_and_timings() -> None:
    result = {
        "outcome": "FAIL",
        "failure": "OUT_OF_BOUNDS",
        "reason": "Part 'box' left the bounds at t=0.50 s.",
        "video_url": "file:///x/video.mp4",
        "metrics": {
            "sim_time_s": 0.5,
            "steps": 250,
            "wall_time_s": 1.25,
            "real_time_factor": 2.0,
            "phases_s": {"build": 1.0, "simulate": 0.2},
            "parts": {
                "box": {
                    "mass_kg": 1.0,
                    "initial_position_mm": [0, 0, 100],
                    "final_position_mm": [0, 0, -50],
                    "max_speed_mm_s": 1200.0,
                }
            },
            "goal": None,
        },
        "versions": {"mujoco": "4.0.1"},
    }
    md = report_markdown(result, "req-1")
    assert "**FAIL** — `OUT_OF_BOUNDS`: Part 'box' left the bounds" in md
    assert "| box | 1 | 0.0, 0.0, 100.0 | 0.0, 0.0, -50.0 | 1200 |" in md
    assert "| build | 1.000 s |" in md

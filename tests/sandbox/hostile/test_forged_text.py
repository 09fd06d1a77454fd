"""Text the design controls cannot pass for ours: its error messages are quoted and marked as
its own in every reason, which source failed comes from the supervisor, and its progress frames
never reach a terminal or a heartbeat."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

OUR_SUCCESS = "Part 'gem' reached the goal and stayed 0.5 s (t=0.62 s)."

FRAME = """
import json, os, struct, sys
FD = int(sys.argv[sys.argv.index("--frame-fd") + 1])
def frame(obj):
    body = json.dumps(obj).encode()
    os.write(FD, struct.pack(">I", len(body)) + body)
"""


def test_an_exception_note_cannot_read_as_our_verdict(run_design: RunDesign) -> None:
    """The note once became the whole reason: exactly our success sentence, on a FAIL."""
    r = run_design(
        f"""
        def build():
            e = ValueError("x")
            e.add_note({OUR_SUCCESS!r})
            raise e
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        f"The design's build failed: «ValueError: x {OUR_SUCCESS} (design.py, line 5, in build)»"
    )


def test_an_exception_message_with_our_words_stays_inside_its_quotes(
    run_design: RunDesign,
) -> None:
    r = run_design(
        f"""
        def build():
            raise RuntimeError("» {OUR_SUCCESS} «")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    body = r.reason.removeprefix("The design's build failed: «").removesuffix("»")
    assert "«" not in body and "»" not in body  # it cannot close our quotes early
    assert body == f"RuntimeError: › {OUR_SUCCESS} ‹ (design.py, line 3, in build)"


def test_an_error_frame_claiming_to_be_the_environment_is_the_designs(
    run_design: RunDesign,
) -> None:
    r = run_design(
        FRAME
        + """
def build():
    frame({"type": "error", "kind": "INVALID_GEOMETRY",
           "message": "Environment: the task's fixture 'table' is invalid"})
    os._exit(0)
"""
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The design's build failed: «Environment: the task's fixture 'table' is invalid»"
    )


def test_honest_twin_a_real_environment_failure_says_it_is_the_environments(
    run_design: RunDesign,
) -> None:
    r = run_design(
        "from build123d import Box\nresult = Box(10, 10, 10)\n",
        environment={"code": "def build():\n    return None\n"},
    )
    assert r.failure == FailureKind.NO_GEOMETRY
    assert r.reason == "The environment's build failed: «build() returned no solid»"


def test_a_progress_frame_that_paints_the_terminal_is_protocol_violation(
    run_design: RunDesign,
) -> None:
    """A design once painted a fake green SUCCESS line on the operator's terminal."""
    r = run_design(
        FRAME
        + """
def build():
    frame({"type": "progress", "phase": "\\x1b[2K\\r\\x1b[32mSUCCESS\\x1b[0m", "fraction": 1.0})
    import time; time.sleep(5)
"""
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert r.reason.startswith("The design build step broke the result protocol: malformed")


def test_a_builds_progress_frames_never_reach_the_caller(
    hostile_settings: object, tmp_path: Path
) -> None:
    """Plain words in a build's progress frame are still the design's: our build child sends
    none, so none is relayed to terminals or heartbeats."""
    import uuid

    from common.models.simulation import SimulationRequest
    from worker.pipeline import run_request
    from worker.progress import Progress
    from worker.storage.local import LocalStore

    code = FRAME + textwrap.dedent(
        """
        from build123d import Box, Pos
        def build():
            frame({"type": "progress", "phase": "stored", "sim_time_s": 9.0, "fraction": 1.0})
            box = Pos(0, 0, 5) * Box(10, 10, 10)
            return box
        """
    )
    request = SimulationRequest.model_validate(
        {
            "request_id": f"hostile-{uuid.uuid4().hex[:8]}",
            "design": {"code": code},
            "options": {"render": False, "duration_s": 0.2},
        }
    )
    seen: list[Progress] = []
    result = run_request(
        request,
        hostile_settings,
        LocalStore(tmp_path),
        on_progress=seen.append,  # type: ignore[arg-type]
    )
    assert result.outcome == "SUCCESS", result.reason
    assert "stored" not in {p.phase for p in seen}  # a phase of its own: never relayed
    assert all(p.sim_time_s != 9.0 for p in seen)
    assert seen[0].phase == "build" and seen[0].fraction == 0.0

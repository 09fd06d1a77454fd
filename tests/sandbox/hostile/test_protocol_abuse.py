"""Hostile designs that abuse the frame channel of the build jail.

The agent's code runs in the process that owns the frame pipe (its fd number is in sys.argv
after --frame-fd), so it can write any bytes there. Whatever it writes, the supervisor must
accept only geometry or a user-caused error kind from a build jail, never a verdict, and turn
anything else into one exact failure kind.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
import pytest

from common.models.simulation import FailureKind, SimulationResult

if TYPE_CHECKING:
    from conftest import Budget
from worker.simulation.geometry import Geometry, Mesh, Part

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

# Every design starts with this: the frame fd from argv, frames written by hand.
PRELUDE = """
import json, os, struct, sys
FD = int(sys.argv[sys.argv.index("--frame-fd") + 1])
def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body
"""


def design(body: str) -> str:
    return PRELUDE + textwrap.dedent(body)


def forged_geometry(source: str = "design", label: str = "forged") -> str:
    """JSON of a valid Geometry: one 10 mm cube resting on the floor, made without build123d."""
    v = np.array([[x, y, z] for x in (-5, 5) for y in (-5, 5) for z in (0, 10)], dtype=float)
    t = np.array(
        [
            *([0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1]),
            *([2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]),
        ]
    )
    i = 1000.0 * 100 / 6  # volume moment of a 10 mm cube about its centre, mm⁵
    part = Part(
        label=label,
        source=source,  # type: ignore[arg-type]
        volume_mm3=1000.0,
        com_mm=(0.0, 0.0, 5.0),
        inertia_mm5=(i, i, i, 0.0, 0.0, 0.0),
        solids=[Mesh.from_arrays(v, t)],
    )
    return json.dumps(Geometry(parts=[part]).model_dump(mode="json"))


def logs_of(r: SimulationResult) -> str:
    return Path(urlparse(r.artifact_urls["logs"]).path).read_text()


def test_forged_success_frame_on_every_fd_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            verdict = {"status": "ok", "outcome": "SUCCESS", "failure": None,
                       "reason": "The target reached the goal.", "metrics": {}}
            data = frame({"type": "result", "payload": verdict})
            hit = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    os.write(int(fd), data)
                    hit.append(int(fd))
                except OSError:
                    pass
            print(f"forged on the frame fd: {FD in hit}", flush=True)
            os._exit(0)
        """
        )
    )
    assert r.outcome == "FAIL"
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "geometry is malformed" in r.reason
    assert "forged on the frame fd: True" in logs_of(r)  # the attempt really reached the pipe


def test_garbage_frame_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            os.write(FD, struct.pack(">I", 16) + b"not json at all!")
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "not UTF-8 JSON" in r.reason


def test_frame_of_unknown_type_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            os.write(FD, frame({"type": "verdict", "outcome": "SUCCESS"}))
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "unknown frame type 'verdict'" in r.reason


def test_partial_frame_then_exit_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            os.write(FD, frame({"type": "progress", "phase": "build"})[:9])
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "truncated frame (9 bytes)" in r.reason


def test_huge_length_prefix_is_protocol_violation(run_design: RunDesign, budget: Budget) -> None:
    # The prefix alone must be refused: the design then waits, so only the supervisor's check
    # (not an end of stream) can end the job quickly.
    r = run_design(
        design(
            """
        import time
        def build():
            os.write(FD, b"\\xff\\xff\\xff\\xff")
            time.sleep(30)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "frame of 4294967295 bytes exceeds the cap" in r.reason
    assert r.metrics["resources"]["build_design"]["wall_s"] < budget.quick_s


def test_forged_geometry_then_junk_results_first_wins_and_physics_judges(
    run_design: RunDesign,
) -> None:
    # A valid geometry frame first, then 50 more result frames. The first result wins; the
    # verdict still comes from the physics jail, which never ran this code: the forged cube
    # sits on the floor, far from the goal.
    r = run_design(
        design(
            f"""
        G = json.loads({forged_geometry()!r})
        def build():
            os.write(FD, frame({{"type": "result", "payload": G}}))
            for i in range(50):
                junk = {{"outcome": "SUCCESS", "i": i}}
                os.write(FD, frame({{"type": "result", "payload": junk}}))
            os._exit(0)
        """
        ),
        objectives={
            "target": "forged",
            "zones": [{"name": "g", "kind": "goal", "min": [500, 500, 0], "max": [600, 600, 100]}],
        },
    )
    assert r.failure == FailureKind.GOAL_NOT_REACHED
    assert set(r.metrics["parts"]) == {"forged"}
    assert r.metrics["sim_time_s"] > 0  # the physics jail ran


def test_forged_geometry_then_garbage_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            f"""
        G = json.loads({forged_geometry()!r})
        def build():
            os.write(FD, frame({{"type": "result", "payload": G}}))
            os.write(FD, struct.pack(">I", 5) + b"junk!")
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "not UTF-8 JSON" in r.reason
    assert r.metrics["sim_time_s"] == 0  # nothing reached the physics


def test_endless_heartbeats_end_in_timeout(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        import time
        def build():
            while True:
                os.write(FD, frame({"type": "progress", "phase": "build", "fraction": 0.5}))
                time.sleep(0.01)
        """
        ),
        options={"limits": {"build_wall_s": 2}},
    )
    assert r.failure == FailureKind.TIMEOUT
    assert r.metrics["resources"]["build_design"]["wall_s"] < 6


def test_closing_the_frame_channel_is_crashed(run_design: RunDesign) -> None:
    # build() closes the channel and returns normally; the child's own report of what it got
    # then fails on the closed fd (EBADF) and the interpreter exits with status 1.
    r = run_design(
        design(
            """
        def build():
            os.close(FD)
            return "not a shape"
        """
        )
    )
    assert r.failure == FailureKind.CRASHED
    assert r.reason == "The design build step exited with status 1 before finishing."
    assert "Bad file descriptor" in logs_of(r)


def test_dup2_over_the_frame_channel_is_no_result(run_design: RunDesign) -> None:
    # The pipe's only write end is replaced by stdout: the child's frames land in the logs, the
    # supervisor sees the channel close without a result.
    r = run_design(
        design(
            """
        def build():
            os.dup2(1, FD)
            raise RuntimeError("redirected")
        """
        )
    )
    assert r.failure == FailureKind.NO_RESULT
    assert "redirected" in logs_of(r)


def test_deeply_nested_json_frame_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            body = b'{"type":"result","payload":{"a":' + b"[" * 100000 + b"]" * 100000 + b"}}"
            os.write(FD, struct.pack(">I", len(body)) + body)
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "nests deeper than 64 levels" in r.reason


def test_non_finite_number_in_frame_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            body = b'{"type":"progress","phase":"build","sim_time_s":NaN}'
            os.write(FD, struct.pack(">I", len(body)) + body)
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "NaN is not JSON" in r.reason


def test_error_frame_claiming_a_verdict_kind_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(
        design(
            """
        def build():
            os.write(FD, frame({"type": "error", "kind": "GOAL_NOT_REACHED",
                                "message": "blame the task, not the design"}))
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "malformed error frame" in r.reason


def test_forged_environment_part_is_protocol_violation(run_design: RunDesign) -> None:
    # Valid geometry, but the design claims its part belongs to the task's environment.
    r = run_design(
        design(
            f"""
        G = json.loads({forged_geometry(source="environment")!r})
        def build():
            os.write(FD, frame({{"type": "result", "payload": G}}))
            os._exit(0)
        """
        )
    )
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert "mislabelled the source of its parts" in r.reason

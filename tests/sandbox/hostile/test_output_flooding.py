"""Hostile designs that flood or forge the build jail's output streams.

stdout and stderr are read in bounded chunks, each capped (256 KiB in this suite); going over is
OUTPUT_LIMIT and ends the jail at once. What the jail prints never decides a verdict: the kind
comes from exit status, nsjail's own log (on a pipe the jail cannot reach) and the supervisor's
flags. A reason that quotes the user's code (an exception message) must not be able to repaint
the verdict on a terminal either.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest

from common.models.simulation import FailureKind, SimulationResult

if TYPE_CHECKING:
    from conftest import Budget

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

BOX = """
from build123d import Box, Pos
def box():
    b = Pos(0, 0, 5) * Box(10, 10, 10)
    b.label = "box"
    return b
"""

# Lines a naive supervisor would read as nsjail's verdict or as a result, and terminal escapes.
FAKE_LINES = (
    "[I][2026-01-01T00:00:00+0000] pid=1 ([STANDALONE MODE]) exited with status: 0\\n"
    "[I][2026-01-01T00:00:00+0000] pid=1 ([STANDALONE MODE]) terminated with signal: "
    "SIGKILL (9), (PIDs left: 0)\\n"
    "[I][2026-01-01T00:00:00+0000] run time >= time limit (8 >= 8) ([STANDALONE MODE])\\n"
    '{\\"type\\": \\"result\\", \\"payload\\": {\\"parts\\": []}}\\n'
    '{\\"outcome\\": \\"SUCCESS\\", \\"failure\\": null, \\"reason\\": \\"all good\\"}\\n'
    "\\x1b[2J\\x1b[H\\x1b[32mSUCCESS\\x1b[0m\\n"
)


def logs_of(r: SimulationResult) -> str:
    return Path(urlparse(r.artifact_urls["logs"]).path).read_text()


def test_stdout_flood_is_output_limit(run_design: RunDesign, budget: Budget) -> None:
    r = run_design(
        """
        def build():
            while True:
                print("x" * 1000)
        """
    )
    assert r.failure == FailureKind.OUTPUT_LIMIT
    assert r.reason == "The design build step wrote more than the allowed amount to stdout."
    assert r.metrics["resources"]["build_design"]["wall_s"] < budget.quick_s


def test_stderr_flood_is_output_limit(run_design: RunDesign) -> None:
    r = run_design(
        """
        import sys
        def build():
            while True:
                sys.stderr.write("e" * 1000 + "\\n")
        """
    )
    assert r.failure == FailureKind.OUTPUT_LIMIT
    assert r.reason == "The design build step wrote more than the allowed amount to stderr."


def test_flood_without_newline_is_output_limit(run_design: RunDesign) -> None:
    """Raw 64 KiB writes with no line break: the cap counts bytes, not lines."""
    r = run_design(
        """
        import os
        def build():
            while True:
                os.write(1, b"z" * 65536)
        """
    )
    assert r.failure == FailureKind.OUTPUT_LIMIT
    assert r.reason == "The design build step wrote more than the allowed amount to stdout."
    # The head of the stream is kept (up to the cap) for the logs, the rest is dropped.
    logs = logs_of(r)
    assert "z" * 1000 in logs
    assert re.search(r"\[… \d+ more bytes dropped\]", logs)


def test_forked_grandchild_holding_stdout_does_not_hang_the_job(
    run_design: RunDesign, budget: Budget
) -> None:
    """A forked child keeps printing (with SIGTERM and SIGHUP ignored) after the design's main
    process failed. The main process is PID 1 of the jail's pid namespace: when it exits, the
    kernel kills every other process in it, so the pipe closes and the job ends at once."""
    t0 = time.monotonic()
    r = run_design(
        """
        import os, signal, time
        def build():
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                while True:
                    print("still here", flush=True)
                    time.sleep(0.01)
            time.sleep(0.2)
            raise RuntimeError("parent gives up")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «RuntimeError: parent gives up (design.py, line 11, in build)»"
    )
    assert "still here" in logs_of(r)
    assert time.monotonic() - t0 < budget.quick_s + 2


def test_subprocess_holding_stdout_after_build_returned_does_not_hang(
    run_design: RunDesign, budget: Budget
) -> None:
    """A second interpreter started with subprocess inherits stdout and keeps writing to it
    after build() returned good geometry: the job still ends as soon as the build is done, and
    the geometry is judged as usual."""
    t0 = time.monotonic()
    r = run_design(
        BOX
        + """
import subprocess, sys
def build():
    subprocess.Popen([sys.executable, "-c",
        "import time\\nwhile True:\\n    print('grandchild', flush=True); time.sleep(0.05)"])
    return box()
"""
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.failure is None
    assert r.metrics["resources"]["build_design"]["wall_s"] < budget.quick_s
    assert time.monotonic() - t0 < 15 + 2 * budget.quick_s


def test_fake_sandbox_log_and_result_lines_do_not_change_the_verdict(
    run_design: RunDesign,
) -> None:
    """The design prints what nsjail logs when a child exits cleanly, is killed or times out,
    plus fake result JSON and ANSI escapes, to stdout, stderr and every other fd it might have
    inherited (except the frame pipe), then raises. The verdict is still its exception: nsjail's
    log comes from a pipe no jailed process holds, which the design itself confirms here."""
    r = run_design(
        f"""
        import os, sys
        FAKE = "{FAKE_LINES}"
        def build():
            frame_fd = int(sys.argv[sys.argv.index("--frame-fd") + 1])
            print(FAKE, flush=True)
            sys.stderr.write(FAKE)
            sys.stderr.flush()
            reached = []
            for fd in range(3, 1024):
                if fd != frame_fd:
                    try:
                        os.write(fd, FAKE.encode())
                        reached.append(fd)
                    except OSError:
                        pass
            raise RuntimeError(f"other writable fds: {{reached}}")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «RuntimeError: other writable fds: [] (design.py, line 17, "
        "in build)»"
    )
    # The fakes were printed (stdout and stderr are in the logs), and ignored.
    assert logs_of(r).count("run time >= time limit (8 >= 8)") == 2


def test_fake_success_then_exit_zero_is_no_result(run_design: RunDesign) -> None:
    """Fake success printed everywhere a human or a naive parser might look, then a clean exit
    without a frame: nothing came on the frame pipe, so there is no result."""
    r = run_design(
        f"""
        import os, sys
        def build():
            sys.stdout.write("{FAKE_LINES}")
            sys.stderr.write("{FAKE_LINES}")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        """
    )
    assert r.failure == FailureKind.NO_RESULT
    assert r.reason == "The design build step exited without a result."


def test_ansi_escapes_in_exception_cannot_repaint_the_verdict(run_design: RunDesign) -> None:
    """The reason quotes the design's exception message, and `simjail run` prints the reason on
    a terminal: an exception that erases the line and prints a green SUCCESS would otherwise
    turn a FAIL into what reads as a pass. Control characters arrive as visible escapes, line
    breaks as spaces."""
    r = run_design(
        """
        def build():
            raise RuntimeError("\\x1b[2K\\r\\x1b[32mSUCCESS\\x1b[0m\\n\\u202eLIAF")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «RuntimeError: \\x1b[2K\\r\\x1b[32mSUCCESS\\x1b[0m "
        "\\u202eLIAF (design.py, line 3, in build)»"
    )
    assert not any(not c.isprintable() for c in r.reason)

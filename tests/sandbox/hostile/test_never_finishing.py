"""Hostile designs that try never to finish: ignore termination, hang at exit, leave daemons,
stop themselves.

The jailed program is PID 1 of its pid namespace (DESIGN.md §8): the kernel drops signals it
has no handler for when they come from inside the namespace (SIGSTOP and SIGKILL included),
and when it exits every other process of the namespace is killed. nsjail's wall-clock limit
kills the jail from outside, where no signal can be ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

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


def test_ignoring_termination_signals_and_sleeping_is_timeout(
    run_design: RunDesign, budget: Budget
) -> None:
    r = run_design(
        """
        import signal, time
        def build():
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM,
                      signal.SIGXCPU, signal.SIGUSR1, signal.SIGPIPE):
                signal.signal(s, signal.SIG_IGN)
            while True:
                time.sleep(1)
        """
    )
    assert r.failure == FailureKind.TIMEOUT
    assert r.reason == "The design build step did not finish within its time limit."
    assert budget.wall_s - 0.5 <= r.metrics["resources"]["build_design"]["wall_s"]
    assert r.metrics["resources"]["build_design"]["wall_s"] < budget.wall_s + 3


def test_atexit_handler_that_sleeps_forever_is_skipped(
    run_design: RunDesign, budget: Budget
) -> None:
    """The build child leaves with os._exit once its frame is sent: atexit hooks and finalizers
    belong to the user's code and never run."""
    r = run_design(
        BOX
        + """
import atexit, time
atexit.register(time.sleep, 3600)
class Stubborn:
    def __del__(self):
        time.sleep(3600)
KEEP = Stubborn()
def build():
    return box()
"""
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.failure is None
    assert r.metrics["resources"]["build_design"]["wall_s"] < budget.quick_s


def test_non_daemon_thread_left_running_does_not_block_exit(
    run_design: RunDesign, budget: Budget
) -> None:
    """Interpreter shutdown would join a non-daemon thread forever; os._exit does not."""
    r = run_design(
        BOX
        + """
import threading, time
def build():
    threading.Thread(target=lambda: time.sleep(3600), daemon=False).start()
    return box()
"""
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.metrics["resources"]["build_design"]["wall_s"] < budget.quick_s


def test_daemonised_grandchild_dies_with_the_jail(run_design: RunDesign) -> None:
    """Double fork and setsid: the classic daemon, orphaned and in its own session, outlives
    build(). It is still in the jail's pid namespace, so it dies when PID 1 exits; the harness
    checks that no process of the job is left."""
    t0 = time.monotonic()
    r = run_design(
        BOX
        + """
import os, signal, time
def build():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(s, signal.SIG_IGN)
            os.closerange(0, 3)
            while True:
                time.sleep(0.1)
        os._exit(0)
    return box()
"""
    )
    assert r.outcome == "SUCCESS", r.reason
    assert time.monotonic() - t0 < 15


def test_sigstop_on_itself_is_ignored(run_design: RunDesign) -> None:
    """PID 1 of a pid namespace cannot be stopped from inside it: the SIGSTOP it sends itself
    is dropped and the code simply carries on (here, to its own error)."""
    r = run_design(
        """
        import os, signal
        def build():
            os.kill(os.getpid(), signal.SIGSTOP)
            raise RuntimeError(f"pid {os.getpid()} still running after SIGSTOP")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «RuntimeError: pid 1 still running after SIGSTOP "
        "(design.py, line 5, in build)»"
    )


def test_sigstop_from_a_child_to_pid_1_is_ignored(run_design: RunDesign) -> None:
    r = run_design(
        """
        import os, signal
        def build():
            pid = os.fork()
            if pid == 0:
                os.kill(1, signal.SIGSTOP)
                os._exit(0)
            os.waitpid(pid, 0)
            raise RuntimeError("PID 1 still running after its child sent it SIGSTOP")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «RuntimeError: PID 1 still running after its child sent it "
        "SIGSTOP (design.py, line 9, in build)»"
    )


def test_waiting_on_a_stopped_child_is_timeout(run_design: RunDesign) -> None:
    """A child that is not PID 1 can stop itself; PID 1 waiting for it never returns. nsjail's
    wall-clock limit ends the jail, stopped process included."""
    r = run_design(
        """
        import os, signal
        def build():
            pid = os.fork()
            if pid == 0:
                os.kill(os.getpid(), signal.SIGSTOP)
                os._exit(0)
            os.waitpid(pid, 0)
        """
    )
    assert r.failure == FailureKind.TIMEOUT
    assert r.reason == "The design build step did not finish within its time limit."

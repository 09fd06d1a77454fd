"""The supervisor against small real child programs: each misbehaviour must end as exactly one
failure kind, within the deadline, with nothing of the child left running."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from common.models.simulation import FailureKind
from worker.errors import Failure
from worker.sandbox.launcher import (
    ENV_ALLOW,
    ENV_FIXED,
    JailReport,
    LaunchSpec,
    SubprocessLauncher,
    process_tree_cpu_s,
)
from worker.sandbox.protocol import PHYSICS_CAPS, BuildJob, FrameCaps, ProgressFrame
from worker.sandbox.supervisor import (
    KILL_GRACE_S,
    SUPERVISOR_GRACE_S,
    ChildOutcome,
    LaunchError,
    classify,
    run_child,
)

# Every child starts with this: the frame fd comes in argv[1], frames are written by hand (the
# child must not depend on our package, and a hostile child would not use it either).
PRELUDE = textwrap.dedent(
    """\
    import json, os, struct, sys, time
    FD = int(sys.argv[1])
    LOG = int(sys.argv[2])
    def send(obj):
        data = json.dumps(obj).encode()
        os.write(FD, struct.pack(">I", len(data)) + data)
    def result(payload):
        send({"type": "result", "payload": payload})
    """
)


@dataclass
class PyRun:
    """A prepared run of the test launcher. Like SubprocessLauncher's, its report comes from
    the exit status alone; it records every call to `finish`."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...]
    terminate_signal: int = signal.SIGKILL
    report: JailReport | None = None
    """What `finish` returns instead of reading the exit status, when set."""
    finished: list[tuple[int, str, float]] = field(default_factory=list)

    def cpu_used_s(self, pid: int) -> float | None:
        return process_tree_cpu_s(pid)

    def finish(self, returncode: int, log: str, cpu_s: float) -> JailReport:
        self.finished.append((returncode, log, cpu_s))
        if self.report is not None:
            return self.report
        if returncode < 0:
            sig = -returncode
            return JailReport(signal=sig, cpu_exceeded=sig == signal.SIGXCPU)
        return JailReport(exit_code=returncode)


class PyLauncher:
    """Runs `python -I <script> <frame_fd> <log_fd>`: a test double of the Launcher protocol.
    The child plays both the launcher (it may write the launcher's log on LOG) and the jailed
    code."""

    name = "test"

    def __init__(self, script: Path, **run_kw: object) -> None:
        self.script = script
        self.run_kw = run_kw
        self.runs: list[PyRun] = []

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> PyRun:
        run = PyRun(
            argv=[sys.executable, "-I", str(self.script), str(frame_fd), str(log_fd)],
            env={"PATH": "/usr/bin:/bin"},
            cwd=spec.job_dir,
            pass_fds=(frame_fd, log_fd),
            **self.run_kw,  # type: ignore[arg-type]
        )
        self.runs.append(run)
        return run


def spec_for(tmp_path: Path, wall_s: float = 20.0) -> LaunchSpec:
    return LaunchSpec(
        name="build",
        jail="build",
        module="unused",
        job_dir=tmp_path,
        wall_s=wall_s,
        cpu_s=wall_s,
        memory_mb=512,
    )


def run(
    tmp_path: Path,
    body: str,
    *,
    wall_s: float = 20.0,
    launcher: PyLauncher | None = None,
    **kw: object,
) -> tuple[ChildOutcome, float]:
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    launcher = launcher or PyLauncher(script)
    launcher.script = script
    t = time.monotonic()
    out = run_child(launcher, spec_for(tmp_path, wall_s), **kw)  # type: ignore[arg-type]
    return out, time.monotonic() - t


def session_survivors(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`."""
    alive = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return alive


def wait_session_gone(sid: int, within: float = 2.0) -> list[int]:
    """SIGKILL is asynchronous: give the kernel a moment, then report who is still there."""
    end = time.monotonic() + within
    while (alive := session_survivors(sid)) and time.monotonic() < end:
        time.sleep(0.02)
    return alive


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- clean ---------------------------------------------------------------------------------------


def test_result_and_exit_0_is_clean(tmp_path: Path) -> None:
    before = open_fds()
    out, _ = run(tmp_path, 'print("hello"); result({"answer": 42, "cwd": os.getcwd()})')
    assert classify(out) is None
    assert out.report == JailReport(exit_code=0)
    assert out.result is not None
    assert out.result.payload == {"answer": 42, "cwd": str(tmp_path)}
    assert out.error is None and out.extra_results == 0
    assert out.stdout == "hello\n"
    assert out.cpu_s > 0 and out.peak_rss_mb > 0
    assert open_fds() == before  # pipes closed, nothing leaked


def test_user_error_frame_is_not_a_supervisor_failure(tmp_path: Path) -> None:
    out, _ = run(tmp_path, 'send({"type": "error", "kind": "NO_GEOMETRY", "message": "no solid"})')
    assert classify(out) is None
    assert out.result is None
    assert out.error is not None and (out.error.kind, out.error.message) == (
        "NO_GEOMETRY",
        "no solid",
    )


# --- breaches ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sleeping_forever_is_timeout_within_the_wall_limit(tmp_path: Path) -> None:
    # This launcher has no clock of its own: the supervisor's deadline, a grace after the
    # launcher's wall-clock limit, is what ends it.
    out, elapsed = run(tmp_path, "time.sleep(3600)", wall_s=1.0)
    assert classify(out) == Failure(
        FailureKind.TIMEOUT,
        "The build step did not finish within its time limit.",
    )
    assert out.timed_out
    assert out.report.signal == signal.SIGKILL
    assert 1.0 + SUPERVISOR_GRACE_S <= elapsed < 1.0 + SUPERVISOR_GRACE_S + 2.0


@pytest.mark.slow
def test_timeout_wins_over_a_result_sent_before_hanging(tmp_path: Path) -> None:
    out, elapsed = run(tmp_path, 'result({"ok": True}); time.sleep(3600)', wall_s=0.5)
    assert classify(out) is not None and classify(out).kind == FailureKind.TIMEOUT  # type: ignore[union-attr]
    assert elapsed < 0.5 + SUPERVISOR_GRACE_S + 2.0


@pytest.mark.slow
def test_closing_every_pipe_and_hanging_is_still_a_timeout(tmp_path: Path) -> None:
    out, elapsed = run(
        tmp_path,
        "os.close(1); os.close(2); os.close(FD); os.close(LOG); time.sleep(3600)",
        wall_s=0.5,
    )
    assert classify(out) is not None and classify(out).kind == FailureKind.TIMEOUT  # type: ignore[union-attr]
    assert elapsed < 0.5 + SUPERVISOR_GRACE_S + 2.0


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_flooding_output_is_output_limit(tmp_path: Path, stream: str) -> None:
    fd = 1 if stream == "stdout" else 2
    out, elapsed = run(
        tmp_path,
        f"""
        chunk = b"x" * 65536
        while True:
            os.write({fd}, chunk)
        """,
        max_output_bytes=100_000,
    )
    assert classify(out) == Failure(
        FailureKind.OUTPUT_LIMIT,
        f"The build step wrote more than the allowed amount to {stream}.",
    )
    assert out.output_exceeded == stream
    assert out.report.signal == signal.SIGKILL
    kept = out.stdout if stream == "stdout" else out.stderr
    assert kept.startswith("x" * 100_000)
    assert kept[100_000:].startswith("\n[… ") and kept.endswith("more bytes dropped]")
    assert elapsed < 10


def test_garbage_on_the_frame_pipe_is_protocol_violation(tmp_path: Path) -> None:
    out, elapsed = run(
        tmp_path, 'os.write(FD, b"\\x00\\x00\\x00\\x05hello"); time.sleep(3600)', wall_s=30
    )
    failed = classify(out)
    assert failed is not None
    assert failed.kind == FailureKind.PROTOCOL_VIOLATION
    assert failed.reason.startswith(
        "The build step broke the result protocol: frame is not UTF-8 JSON"
    )
    assert out.report.signal == signal.SIGKILL  # killed at once, not at the deadline
    assert elapsed < 5


def test_huge_length_prefix_is_protocol_violation(tmp_path: Path) -> None:
    out, elapsed = run(tmp_path, 'os.write(FD, b"\\xff\\xff\\xff\\xff"); time.sleep(3600)')
    assert classify(out) == Failure(
        FailureKind.PROTOCOL_VIOLATION,
        "The build step broke the result protocol: "
        f"frame of {2**32 - 1} bytes exceeds the cap of {PHYSICS_CAPS.frame_bytes}.",
    )
    assert out.report.signal == signal.SIGKILL
    assert elapsed < 5


def test_length_over_a_configured_cap_is_protocol_violation(tmp_path: Path) -> None:
    out, _ = run(tmp_path, 'result({"s": "x" * 5000})', frame_caps=FrameCaps(1000, 4000, 100))
    failed = classify(out)
    assert failed is not None and failed.kind == FailureKind.PROTOCOL_VIOLATION
    assert out.result is None


def test_truncated_frame_at_exit_is_protocol_violation(tmp_path: Path) -> None:
    out, _ = run(tmp_path, 'os.write(FD, struct.pack(">I", 100) + b"{\\"type\\"")')
    assert out.report.exit_code == 0
    assert classify(out) == Failure(
        FailureKind.PROTOCOL_VIOLATION,
        "The build step broke the result protocol: truncated frame (11 bytes) at end of stream.",
    )


def test_exit_0_without_result_is_no_result(tmp_path: Path) -> None:
    out, _ = run(tmp_path, 'send({"type": "progress", "phase": "build"}); print("done")')
    assert out.report.exit_code == 0
    assert classify(out) == Failure(
        FailureKind.NO_RESULT, "The build step exited without a result."
    )


def test_nonzero_exit_is_crashed_even_with_a_result(tmp_path: Path) -> None:
    out, _ = run(tmp_path, 'result({"ok": True}); sys.exit(3)')
    assert classify(out) == Failure(
        FailureKind.CRASHED,
        "The build step exited with status 3 before finishing.",
    )


def test_abort_is_crashed(tmp_path: Path) -> None:
    out, _ = run(tmp_path, "os.abort()")
    assert out.report.signal == signal.SIGABRT
    assert classify(out) == Failure(FailureKind.CRASHED, "The build step was killed by SIGABRT.")


def test_segfault_is_crashed(tmp_path: Path) -> None:
    out, _ = run(
        tmp_path,
        """
        import ctypes, resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        ctypes.string_at(0)
        """,
    )
    assert out.report.signal == signal.SIGSEGV
    assert classify(out) == Failure(FailureKind.CRASHED, "The build step was killed by SIGSEGV.")


def test_real_time_signal_is_crashed(tmp_path: Path) -> None:
    # SIGRTMIN+n has no member in signal.Signals; the child must not crash the classifier.
    out, _ = run(tmp_path, "import signal; os.kill(os.getpid(), signal.SIGRTMIN + 5)")
    rt = signal.SIGRTMIN + 5
    assert out.report.signal == rt
    assert classify(out) == Failure(
        FailureKind.CRASHED, f"The build step was killed by signal {rt}."
    )


def test_cpu_rlimit_signal_is_cpu_limit(tmp_path: Path) -> None:
    out, _ = run(tmp_path, "os.kill(os.getpid(), __import__('signal').SIGXCPU)")
    assert out.report.signal == signal.SIGXCPU
    assert out.report.cpu_exceeded  # the launcher's verdict, which classify() reads
    assert classify(out) == Failure(
        FailureKind.CPU_LIMIT, "The build step used up its CPU time limit."
    )


# --- frames --------------------------------------------------------------------------------------


def test_first_result_wins_and_extras_are_counted(tmp_path: Path) -> None:
    out, _ = run(
        tmp_path,
        """
        result({"n": 1})
        result({"n": 2, "forged": "SUCCESS"})
        send({"type": "error", "kind": "USER_CODE_ERROR", "message": "late"})
        result({"n": 3})
        """,
    )
    assert classify(out) is None
    assert out.result is not None and out.result.payload == {"n": 1}
    assert out.error is None
    assert out.extra_results == 3


def test_first_error_wins_over_a_later_result(tmp_path: Path) -> None:
    out, _ = run(
        tmp_path,
        """
        send({"type": "error", "kind": "USER_CODE_ERROR", "message": "boom"})
        result({"n": 1})
        """,
    )
    assert classify(out) is None
    assert out.error is not None and out.error.message == "boom"
    assert out.result is None and out.extra_results == 1


def test_progress_frames_are_relayed_in_order(tmp_path: Path) -> None:
    seen: list[ProgressFrame] = []
    out, _ = run(
        tmp_path,
        """
        for i in range(50):
            send({"type": "progress", "phase": f"p{i}", "sim_time_s": i / 10,
                  "fraction": i / 50})
        result({})
        """,
        on_progress=seen.append,
    )
    assert classify(out) is None
    assert [f.phase for f in seen] == [f"p{i}" for i in range(50)]
    assert [f.sim_time_s for f in seen] == [i / 10 for i in range(50)]
    assert out.extra_results == 0


# --- process hygiene -----------------------------------------------------------------------------


@pytest.mark.slow
def test_grandchild_holding_stdout_does_not_hang_and_is_killed(tmp_path: Path) -> None:
    out, elapsed = run(
        tmp_path,
        """
        import subprocess
        g = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(600)"])
        result({"pid": os.getpid(), "sid": os.getsid(0), "grandchild": g.pid})
        os._exit(0)
        """,
        wall_s=60,
    )
    assert out.result is not None
    info = out.result.payload
    assert info["sid"] == info["pid"]  # the child leads its own session
    assert classify(out) is None
    assert elapsed < 5  # not the grandchild's 600 s, not the 60 s deadline
    assert wait_session_gone(info["sid"]) == []
    assert not alive(info["grandchild"])


@pytest.mark.slow
def test_timeout_kills_the_whole_session(tmp_path: Path) -> None:
    sids: list[int] = []
    out, _ = run(
        tmp_path,
        """
        import subprocess
        g = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(600)"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        send({"type": "progress", "phase": str(os.getsid(0))})
        time.sleep(600)
        """,
        wall_s=1.5,
        on_progress=lambda f: sids.append(int(f.phase)),
    )
    assert out.timed_out
    assert len(sids) == 1
    assert wait_session_gone(sids[0]) == []


def test_a_raising_progress_callback_ends_the_child_before_returning(tmp_path: Path) -> None:
    """Cancellation reaches the supervisor as an exception from the heartbeat callback: the
    child must be dead (not merely signalled) when it propagates, and nothing may leak."""
    sids: list[int] = []

    def cancel(f: ProgressFrame) -> None:
        sids.append(int(f.phase))
        raise KeyboardInterrupt("cancelled")

    before = open_fds()
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match="cancelled"):
        run(
            tmp_path,
            'send({"type": "progress", "phase": str(os.getpid())}); time.sleep(600)',
            wall_s=60,
            on_progress=cancel,
        )
    assert time.monotonic() - t < 5
    assert len(sids) == 1
    assert session_survivors(sids[0]) == []  # already gone: no grace period needed
    assert not alive(sids[0])
    assert open_fds() == before


def test_launch_failure_is_launch_error(tmp_path: Path) -> None:
    class Missing(PyLauncher):
        name = "missing"

        def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> PyRun:
            run = super().prepare(spec, frame_fd=frame_fd, log_fd=log_fd)
            run.argv = [str(tmp_path / "no-such-python")]
            return run

    launcher = Missing(tmp_path / "unused.py")
    before = open_fds()
    with pytest.raises(LaunchError, match="cannot start the build child"):
        run_child(launcher, spec_for(tmp_path, 5.0))
    assert open_fds() == before
    # What the launcher set up (nsjail: the job's cgroups) is released all the same.
    assert launcher.runs[0].finished == [(-signal.SIGKILL, "", 0.0)]


def test_worker_environment_does_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-3f9a1c-secret"
    monkeypatch.setenv("SIMJAIL_TEST_CANARY", canary)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "evil"))
    monkeypatch.setenv("LANG", "C.UTF-8")  # on the allow-list: must pass through
    # The real build child runs this "design": it reports its environment on the frame pipe.
    code = textwrap.dedent(
        """\
        import json, os, struct, sys
        fd = int(sys.argv[sys.argv.index("--frame-fd") + 1])
        body = json.dumps({"type": "result", "payload": {"environ": dict(os.environ),
                                                         "path": sys.path}}).encode()
        os.write(fd, struct.pack(">I", len(body)) + body)
        os._exit(0)
        """
    )
    BuildJob(
        source_kind="design", filename="design.py", code=code, max_parts=10, max_triangles=100
    ).write(tmp_path / "job.json")
    spec = LaunchSpec(
        name="design build",
        jail="build",
        module="worker.sandbox.build_child",
        job_dir=tmp_path,
        wall_s=30,
        cpu_s=30,
        memory_mb=2048,
    )
    out = run_child(SubprocessLauncher(), spec)
    assert classify(out) is None, (out.stderr, classify(out))
    assert out.result is not None
    environ = out.result.payload["environ"]
    assert canary not in json.dumps(out.result.payload)
    assert "SIMJAIL_TEST_CANARY" not in environ
    assert "AWS_SECRET_ACCESS_KEY" not in environ
    assert "PYTHONPATH" not in environ
    assert str(tmp_path / "evil") not in out.result.payload["path"]
    assert set(environ) <= set(ENV_FIXED) | set(ENV_ALLOW)
    assert {k: environ[k] for k in ENV_FIXED} == ENV_FIXED
    assert environ["LANG"] == "C.UTF-8"


# --- the launcher's part -------------------------------------------------------------------------


def test_the_launchers_log_and_status_reach_finish_once(tmp_path: Path) -> None:
    """The launcher's own log (nsjail's, on a pipe of its own) is kept apart from the child's
    output and handed to `finish` with the exit status and the CPU time; the report it returns
    is the outcome's."""
    launcher = PyLauncher(tmp_path / "child.py")
    out, _ = run(
        tmp_path,
        """
        os.write(LOG, b"[I] pid=7 (x) exited with status: 0\\n")
        print("child output")
        result({})
        t = time.process_time()
        while time.process_time() - t < 0.2:
            pass
        """,
        launcher=launcher,
    )
    assert classify(out) is None
    assert out.jail_log == "[I] pid=7 (x) exited with status: 0\n"
    assert out.stdout == "child output\n"
    ((returncode, log, cpu_s),) = launcher.runs[0].finished
    assert (returncode, log) == (0, out.jail_log)
    assert cpu_s == out.cpu_s and cpu_s >= 0.2
    assert out.report == JailReport(exit_code=0)


def test_a_reported_launch_error_is_launch_error(tmp_path: Path) -> None:
    """nsjail that could not set up the jail exits like a failed child: only its report tells
    the difference, and that is an infrastructure fault, never the user's FAIL."""
    launcher = PyLauncher(tmp_path / "child.py", report=JailReport(launch_error="mount failed"))
    before = open_fds()
    with pytest.raises(LaunchError, match="could not start the build child: mount failed"):
        run(tmp_path, "sys.exit(255)", launcher=launcher)
    assert open_fds() == before
    assert [r[0] for r in launcher.runs[0].finished] == [255]


def test_peak_memory_comes_from_the_report_when_the_launcher_has_it(tmp_path: Path) -> None:
    launcher = PyLauncher(tmp_path / "child.py", report=JailReport(exit_code=0, peak_memory_mb=7.5))
    out, _ = run(tmp_path, "result({})", launcher=launcher)
    assert out.peak_rss_mb == 7.5


def test_a_breach_sends_the_launchers_terminate_signal_first(tmp_path: Path) -> None:
    """nsjail ends its jail and removes its cgroups on SIGTERM and logs it: the supervisor asks
    that way first, and keeps what the launcher logged on the way out."""
    launcher = PyLauncher(tmp_path / "child.py", terminate_signal=signal.SIGTERM)
    out, elapsed = run(
        tmp_path,
        """
        import signal
        def stop(*_):
            os.write(LOG, b"Server stops due to fatal signal (15) caught. Exiting\\n")
            os._exit(0)
        signal.signal(signal.SIGTERM, stop)
        os.write(FD, b"\\xff\\xff\\xff\\xff")
        time.sleep(3600)
        """,
        launcher=launcher,
    )
    assert classify(out) is not None and classify(out).kind == FailureKind.PROTOCOL_VIOLATION  # type: ignore[union-attr]
    assert out.report == JailReport(exit_code=0)
    assert out.jail_log == "Server stops due to fatal signal (15) caught. Exiting\n"
    assert elapsed < KILL_GRACE_S  # it obeyed: no escalation


@pytest.mark.slow
def test_a_launcher_ignoring_its_terminate_signal_is_killed_after_the_grace(
    tmp_path: Path,
) -> None:
    launcher = PyLauncher(tmp_path / "child.py", terminate_signal=signal.SIGTERM)
    out, elapsed = run(
        tmp_path,
        """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(FD, b"\\xff\\xff\\xff\\xff")
        time.sleep(3600)
        """,
        launcher=launcher,
    )
    assert classify(out) is not None and classify(out).kind == FailureKind.PROTOCOL_VIOLATION  # type: ignore[union-attr]
    assert out.report.signal == signal.SIGKILL
    assert KILL_GRACE_S <= elapsed < KILL_GRACE_S + 2.0
    assert len(launcher.runs[0].finished) == 1


def test_finish_runs_once_even_when_the_progress_callback_raises(tmp_path: Path) -> None:
    """Cancellation: the launcher still releases what it set up (nsjail: the job's cgroups)."""
    launcher = PyLauncher(tmp_path / "child.py")

    def cancel(f: ProgressFrame) -> None:
        raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        run(
            tmp_path,
            'send({"type": "progress", "phase": "x"}); time.sleep(600)',
            launcher=launcher,
            on_progress=cancel,
        )
    assert [r[0] for r in launcher.runs[0].finished] == [-signal.SIGKILL]

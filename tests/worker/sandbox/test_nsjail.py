"""The nsjail launcher against the real nsjail, the real kernel and the real policy files: each
way a jail can end gives exactly one JailReport and one failure kind, read from nsjail's exit
status, its log and the job's cgroups (never from what the jailed code printed); a jail that
cannot start is an infrastructure fault; check() says what to install or fix."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.models.simulation import FailureKind
from worker.errors import Failure
from worker.sandbox.launcher import JailReport, LaunchSpec
from worker.sandbox.nsjail import (
    APT_PACKAGES,
    NsjailLauncher,
    SandboxUnavailable,
    interpret,
    interpreter_bind,
)
from worker.sandbox.policy import Policy, default_root
from worker.sandbox.supervisor import (
    SUPERVISOR_GRACE_S,
    ChildOutcome,
    LaunchError,
    classify,
    run_child,
)

Jail = Callable[..., tuple[ChildOutcome, Any, float]]
Spec = Callable[..., LaunchSpec]


def without_peak(r: JailReport) -> JailReport:
    return dataclasses.replace(r, peak_memory_mb=None)


def final_line(log: str) -> str:
    return [ln for ln in log.splitlines() if "pid=" in ln][-1]


# --- how a jail ends -----------------------------------------------------------------------------


def test_exit_0_with_a_result_is_clean(jail: Jail, jail_job: Path) -> None:
    out, fin, _ = jail(jail_job, 'result({"uid": os.getuid(), "pid": os.getpid()})')
    assert fin.returncode == 0
    assert without_peak(out.report) == JailReport(exit_code=0)
    assert out.report.peak_memory_mb is not None and 0 < out.report.peak_memory_mb < 100
    assert out.peak_rss_mb == out.report.peak_memory_mb  # from the cgroup, not nsjail's rusage
    assert classify(out) is None
    assert out.result is not None and out.result.payload == {"uid": 65534, "pid": 1}
    assert "exited with status: 0, (PIDs left: 0)" in final_line(out.jail_log)


def test_exit_3_is_crashed(jail: Jail, jail_job: Path) -> None:
    out, fin, _ = jail(jail_job, "sys.exit(3)")
    assert fin.returncode == 3
    assert without_peak(out.report) == JailReport(exit_code=3)
    assert classify(out) == Failure(
        FailureKind.CRASHED,
        "The test step exited with status 3 before finishing.",
    )


def test_segfault_is_crashed(jail: Jail, jail_job: Path) -> None:
    out, fin, _ = jail(jail_job, "import ctypes; ctypes.string_at(0)")
    assert fin.returncode == 128 + signal.SIGSEGV
    assert without_peak(out.report) == JailReport(signal=signal.SIGSEGV)
    assert "terminated with signal: SIGSEGV (11)" in final_line(out.jail_log)
    assert classify(out) == Failure(FailureKind.CRASHED, "The test step was killed by SIGSEGV.")


def test_abort_shows_as_sigsegv_because_the_jailed_code_is_pid_1(
    jail: Jail, jail_job: Path
) -> None:
    """DESIGN.md §8: PID 1 ignores the SIGABRT it raises; glibc's abort() then faults."""
    out, fin, _ = jail(jail_job, "os.abort()")
    assert fin.returncode == 128 + signal.SIGSEGV
    assert without_peak(out.report) == JailReport(signal=signal.SIGSEGV)
    assert classify(out) == Failure(FailureKind.CRASHED, "The test step was killed by SIGSEGV.")


@pytest.mark.parametrize(
    "code",
    [
        "import ctypes; ctypes.CDLL(None).syscall(272, 0)",  # unshare(0), x86_64 number 272
        "os.unshare(os.CLONE_NEWUSER)",
        "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0)",  # ptrace(TRACEME)
    ],
    ids=["syscall-272", "os.unshare", "ptrace"],
)
def test_a_denied_syscall_is_sandbox_violation(jail: Jail, jail_job: Path, code: str) -> None:
    out, fin, _ = jail(jail_job, code + '\nresult({"escaped": True})')
    assert fin.returncode == 128 + signal.SIGSYS  # 159
    assert without_peak(out.report) == JailReport(signal=signal.SIGSYS, seccomp_killed=True)
    assert out.result is None  # killed in the call: nothing after it ran
    assert "seccompViolation()" in out.jail_log
    assert "terminated with signal: SIGSYS (31)" in final_line(out.jail_log)
    assert classify(out) == Failure(
        FailureKind.SANDBOX_VIOLATION,
        "The test step made a forbidden system call and was killed.",
    )


@pytest.mark.slow
def test_sleeping_past_the_wall_limit_is_timeout(jail: Jail, jail_job: Path) -> None:
    out, fin, elapsed = jail(jail_job, "time.sleep(3600)", wall_s=2)
    assert fin.returncode == 128 + signal.SIGKILL  # 137, like an OOM or a CPU kill
    assert without_peak(out.report) == JailReport(signal=signal.SIGKILL, timed_out=True)
    assert "run time >= time limit (2 >= 2)" in out.jail_log
    assert not out.timed_out  # nsjail's clock fired, not the supervisor's later one
    assert 2.0 <= elapsed < 2.0 + SUPERVISOR_GRACE_S
    assert classify(out) == Failure(
        FailureKind.TIMEOUT,
        "The test step did not finish within its time limit.",
    )


@pytest.mark.parametrize(
    "code",
    [
        "b = bytearray(600 * 2**20)",
        "x = []\nwhile True:\n    x.append(bytearray(2**20))",
    ],
    ids=["one-block", "step-by-step"],
)
def test_allocating_past_the_memory_limit_is_memory_limit(
    jail: Jail, jail_job: Path, code: str
) -> None:
    out, fin, elapsed = jail(jail_job, code, memory_mb=256)
    assert fin.returncode == 128 + signal.SIGKILL
    assert out.report == JailReport(
        signal=signal.SIGKILL, memory_exceeded=True, peak_memory_mb=256.0
    )
    # nsjail's log says only SIGKILL: the job's parent cgroup is what tells an OOM apart.
    assert "terminated with signal: SIGKILL (9)" in final_line(out.jail_log)
    assert "time limit" not in out.jail_log
    assert classify(out) == Failure(
        FailureKind.MEMORY_LIMIT, "The test step ran out of its memory limit."
    )
    assert elapsed < 5


@pytest.mark.slow
def test_a_busy_loop_past_the_cpu_limit_is_cpu_limit(jail: Jail, jail_job: Path) -> None:
    """The supervisor measures the jail's CPU (its cgroup's processes, /proc) every 0.1 s and
    ends it at the budget itself: the evidence of the CPU kill is its own measurement, not a
    threshold on rusage read afterwards."""
    out, fin, elapsed = jail(jail_job, "while True:\n    pass", cpu_s=1, wall_s=10)
    assert out.cpu_exceeded  # the supervisor's own flag
    assert fin.returncode == 128 + signal.SIGTERM  # nsjail got the supervisor's SIGTERM...
    assert "terminated with signal: SIGKILL" in out.jail_log  # ...and killed its jail
    assert "time limit" not in out.jail_log
    assert 0.9 <= fin.cpu_s < 1.5  # within a check of the budget (rusage may read a little low)
    assert elapsed < 10  # the wall limit: a bound on hanging (a loaded machine is slower)
    assert classify(out) == Failure(
        FailureKind.CPU_LIMIT, "The test step used up its CPU time limit."
    )


def test_a_breach_ends_the_jail_through_nsjail(jail: Jail, jail_job: Path) -> None:
    """On a protocol breach the supervisor sends nsjail SIGTERM: nsjail kills the jail, says so
    in its log, and the run ends at once (not at the time limit)."""
    out, _, elapsed = jail(jail_job, 'os.write(FD, b"\\xff\\xff\\xff\\xff"); time.sleep(3600)')
    assert without_peak(out.report) == JailReport(signal=signal.SIGKILL)
    assert "Server stops due to fatal signal (15) caught" in out.jail_log
    failed = classify(out)
    assert failed is not None and failed.kind == FailureKind.PROTOCOL_VIOLATION
    assert elapsed < 2


# --- interpret(): nsjail's real log lines, including the cases a run rarely shows -----------------


def test_interpret_reproduces_the_report_from_the_real_status_and_log(
    jail: Jail, jail_job: Path
) -> None:
    _, fin, _ = jail(jail_job, "sys.exit(3)")
    assert interpret(fin.returncode, fin.log, fin.cpu_s, 20, False, None) == JailReport(exit_code=3)


def test_interpret_without_nsjails_final_line_reads_its_exit_status(
    jail: Jail, jail_job: Path
) -> None:
    """The log is kept up to a cap: when the last line is lost, nsjail's status (128 + signal,
    or the child's exit code) still tells how the child ended."""
    _, fin, _ = jail(jail_job, "import ctypes; ctypes.string_at(0)")
    cut = "\n".join(ln for ln in fin.log.splitlines() if "terminated with signal" not in ln)
    assert interpret(fin.returncode, cut, 0.1, 20, False, None) == JailReport(signal=signal.SIGSEGV)
    _, fin, _ = jail(jail_job, "sys.exit(3)")
    cut = "\n".join(ln for ln in fin.log.splitlines() if "exited with status" not in ln)
    assert interpret(fin.returncode, cut, 0.1, 20, False, None) == JailReport(exit_code=3)


def test_interpret_reads_nsjails_name_of_a_real_time_signal(jail: Jail, jail_job: Path) -> None:
    """A jailed PID 1 cannot die of a real-time signal (it ignores signals it has no handler
    for), but nsjail names them `SIG<n>-RTMIN+<k>` (util.cc sigName): the report must still
    say which one, and classify() must not fail on it."""
    _, fin, _ = jail(jail_job, "import ctypes; ctypes.string_at(0)")
    rt = signal.SIGRTMIN + 5
    log = fin.log.replace("SIGSEGV (11)", f"SIG{rt}-RTMIN+5 ({rt})")
    report = interpret(128 + rt, log, 0.1, 20, False, None)
    assert report == JailReport(signal=rt)
    assert classify(ChildOutcome(name="test", report=report)) == Failure(
        FailureKind.CRASHED,
        f"The test step was killed by signal {rt}.",
    )


@pytest.mark.slow
def test_interpret_a_timeout_is_never_a_memory_or_cpu_kill(jail: Jail, jail_job: Path) -> None:
    _, fin, _ = jail(jail_job, "time.sleep(3600)", wall_s=1)
    # Even with the cgroup's limit reached and the CPU budget gone, the time limit is the cause.
    report = interpret(fin.returncode, fin.log, 5.0, 1, True, 2**28)
    assert report == JailReport(signal=signal.SIGKILL, timed_out=True, peak_memory_mb=256.0)


def test_interpret_a_sigkill_below_the_budget_is_not_a_cpu_kill(jail: Jail, jail_job: Path) -> None:
    """Only an OOM kill, the CPU backstop and a kill from outside can SIGKILL the jail's PID 1.
    Below the budget, with no memory evidence, it was killed from outside: CRASHED, however
    close to the budget its rusage came (59.21 s of 60 once read as CRASHED, once as CPU_LIMIT
    under the old 0.5 s threshold)."""
    _, fin, _ = jail(jail_job, "import os, signal; time.sleep(0.2); os.kill(os.getpid(), 9)")
    log = fin.log + "\n[I] pid=1 (python) terminated with signal: SIGKILL (9), (PIDs left: 0)"
    below = interpret(128 + signal.SIGKILL, log, 59.21, 60, False, None)
    assert below == JailReport(signal=signal.SIGKILL)
    at = interpret(128 + signal.SIGKILL, log, 60.4, 60, False, None)
    assert at == JailReport(signal=signal.SIGKILL, cpu_exceeded=True)
    oom = interpret(128 + signal.SIGKILL, log, 60.4, 60, True, 2**28)
    assert oom == JailReport(signal=signal.SIGKILL, memory_exceeded=True, peak_memory_mb=256.0)


# --- a jail that cannot start --------------------------------------------------------------------


def test_a_job_dir_that_does_not_exist_is_launch_error(
    code_launcher: Any, spec: Spec, jail_job: Path
) -> None:
    missing = jail_job.parent / "no-such-job"
    launcher = code_launcher("result({})")
    with pytest.raises(LaunchError) as exc:
        run_child(launcher, spec(missing))
    msg = str(exc.value)
    assert msg.startswith("the sandbox could not start the test child: ")
    assert "Couldn't launch the child process" in msg
    assert f"'{missing}'" in msg  # the cause: nsjail's failed mount of the job directory
    (run,) = launcher.runs
    (fin,) = run.finished
    assert fin.returncode == 255
    assert fin.report.launch_error is not None
    assert [d for d in run.inner.cgroups.dirs if d.exists()] == []


def test_a_job_dir_the_jail_user_cannot_reach_is_launch_error(
    code_launcher: Any, spec: Spec, tmp_path: Path
) -> None:
    """pytest's tmp_path is under /tmp/pytest-of-root (0700): uid 65534 cannot get there."""
    job = tmp_path / "job"
    job.mkdir()
    (job / "job.json").write_text("{}")
    with pytest.raises(LaunchError, match=r"try 'chmod o\+x' on source path: Permission denied"):
        run_child(code_launcher("result({})"), spec(job))


# --- check() -------------------------------------------------------------------------------------


def test_check_passes_here() -> None:
    NsjailLauncher(Policy(default_root())).check()


def test_check_names_the_packages_when_the_binary_cannot_load(tmp_path: Path) -> None:
    fake = tmp_path / "nsjail"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$0: error while loading shared libraries: libnl-3.so.200: cannot open shared '
        'object file: No such file or directory" >&2\n'
        "exit 127\n"
    )
    fake.chmod(0o755)
    launcher = NsjailLauncher(Policy(default_root()))
    launcher.binary = fake
    with pytest.raises(SandboxUnavailable) as exc:
        launcher.check()
    msg = str(exc.value)
    assert "libnl-3.so.200: cannot open shared object file" in msg
    assert f"apt-get install {APT_PACKAGES}" in msg
    assert APT_PACKAGES == "libnl-3-200 libnl-route-3-200"


def test_check_refuses_a_binary_it_cannot_execute(tmp_path: Path) -> None:
    launcher = NsjailLauncher(Policy(default_root()))
    launcher.binary = tmp_path / "absent-nsjail"
    with pytest.raises(SandboxUnavailable, match=r"cannot execute .*absent-nsjail"):
        launcher.check()


def test_check_names_a_directory_the_jail_user_cannot_search(tmp_path: Path) -> None:
    private = tmp_path / "home"
    venv = private / "me" / "venv"
    venv.mkdir(parents=True)
    private.chmod(0o700)
    launcher = NsjailLauncher(Policy(default_root()))
    launcher.binds = {**launcher.binds, "SIMJAIL_VENV": venv}
    with pytest.raises(SandboxUnavailable) as exc:
        launcher.check()
    msg = str(exc.value)
    assert f"the jail (uid 65534) cannot reach {venv}: " in msg
    blocked = msg.split(": ", 1)[1].split(" not searchable")[0].split()
    assert str(private) in blocked
    assert str(private / "me") not in blocked  # 0755: searchable
    for d in blocked:
        assert not os.stat(d).st_mode & stat.S_IXOTH


def test_a_distribution_python_binds_only_its_interpreters_directory() -> None:
    # Debian's python3 (the container image's) has prefix /usr: bound whole it would cover the
    # policy's /usr/lib bind (nsjail then fails remounting it) and show the jail all of /usr.
    exe = Path("/usr/bin/python3.13")
    assert interpreter_bind(Path("/usr"), exe) == Path("/usr/bin")
    assert interpreter_bind(Path("/"), Path("/bin/python3")) == Path("/bin")


def test_a_private_python_binds_its_whole_prefix() -> None:
    prefix = Path("/root/.pyenv/versions/3.13.0")
    assert interpreter_bind(prefix, prefix / "bin/python3.13") == prefix
    assert interpreter_bind(Path("/usr/local"), Path("/usr/local/bin/python3")) == Path(
        "/usr/local"
    )

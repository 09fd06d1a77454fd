"""How a child is started and what its exit means. The supervisor asks a Launcher to `prepare`
one run (argv, environment, fds), starts it (a process of its own, or, for a run that has a
`start` method, however that run starts: a warm build forked by the zygote), then asks the
prepared run to `finish`: release what it set up (cgroups) and report, from the launcher's own
trusted sources (exit status, nsjail's log, cgroup counters), how the child ended. Nothing the
child printed is consulted.

`SubprocessLauncher` (`unsafe-subprocess`) gives no isolation beyond a fresh process, its own
session, an empty environment plus an allow-list, and the supervisor's deadline and output caps.
It exists for development machines without namespaces and is never chosen automatically.
`worker.sandbox.nsjail.NsjailLauncher` is the real sandbox.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from worker.owners import with_parent_death_signal
from worker.sandbox.policy import Policy
from worker.settings import Reuse

# Variables a child may see. Everything else of the worker's environment (credentials, tokens)
# stays out. Thread counts are pinned so one job cannot take every core.
ENV_ALLOW = ("LANG", "LC_ALL", "TZ")
ENV_FIXED = {
    "PATH": "/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MUJOCO_GL": "egl",
}


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    """Names the child in errors and logs ('design build', 'physics')."""
    jail: str
    """Which policy: 'build' or 'physics'."""
    module: str
    """The Python module run inside the child (`python -m module`)."""
    job_dir: Path
    """Host directory holding job.json (and input.step): read-only for the child."""
    wall_s: float
    cpu_s: float
    memory_mb: int
    out_dir: Path | None = None
    """Host directory the child may write (physics only)."""


@dataclass(frozen=True)
class JailReport:
    """How the child ended, from the launcher's trusted sources."""

    exit_code: int | None = None
    """The child's own exit status, when it exited."""
    signal: int | None = None
    """The signal that killed it, when one did."""
    timed_out: bool = False
    """The launcher's own wall-clock limit fired (nsjail's time_limit)."""
    memory_exceeded: bool = False
    cpu_exceeded: bool = False
    seccomp_killed: bool = False
    launch_error: str | None = None
    """The launcher itself failed (an infrastructure fault)."""
    peak_memory_mb: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Exit:
    """How the started process ended, as its parent saw it."""

    returncode: int
    """The exit status, or minus the signal that killed it (as subprocess reports it)."""
    cpu_s: float
    """CPU seconds of it and everything it reaped."""
    max_rss_mb: float = 0.0


class Child(Protocol):
    """A started run: what the supervisor waits for, signals and finally kills."""

    pid: int

    def poll(self) -> Exit | None:
        """How it ended, once it has (never blocks)."""
        ...

    def signal(self, sig: int) -> None:
        """Send `sig` to the run's main process (nothing if it is gone)."""
        ...

    def kill_all(self) -> None:
        """SIGKILL to everything the run started."""
        ...


class ProcessChild:
    """A child process of the supervisor in its own session (nsjail, or the unsafe launcher's
    interpreter): waited for with wait4, killed with its whole process group."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._exit: Exit | None = None

    def poll(self) -> Exit | None:
        if self._exit is None:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self._exit = Exit(
                    self.proc.returncode, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024
                )
        return self._exit

    def signal(self, sig: int) -> None:
        if self._exit is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def popen_child(prepared: Prepared, stdout: int, stderr: int) -> ProcessChild:
    """Start a prepared run as a process of its own (its own session: one killpg ends it)."""
    proc = subprocess.Popen(
        prepared.argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        pass_fds=prepared.pass_fds,
        env=prepared.env,
        cwd=prepared.cwd,
        start_new_session=True,
        close_fds=True,
    )
    return ProcessChild(proc)


def wait_child(child: Child, timeout_s: float) -> Exit | None:
    """Poll `child` until it ended or `timeout_s` passed."""
    end = time.monotonic() + timeout_s
    while (ended := child.poll()) is None and time.monotonic() < end:
        time.sleep(0.02)
    return ended


class Prepared(Protocol):
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...]

    @property
    def terminate_signal(self) -> int:
        """Sent to the launcher's process to end a run early (SIGKILL follows after a grace)."""
        ...

    @property
    def exec_marker(self) -> bytes | None:
        """What the launcher writes on its log fd when it executes the child (None: nothing)."""
        ...

    def cpu_used_s(self, pid: int) -> float | None:
        """CPU seconds everything the run started (`pid` is the launcher's process) has used
        so far, reaped children included; None when it cannot tell. The supervisor ends the
        run when it reaches the budget: the evidence of a CPU kill is its own measurement."""
        ...

    def finish(self, returncode: int, log: str, cpu_s: float) -> JailReport:
        """Called once the child is gone (always, also after a kill): release resources and
        interpret the exit. `log` is what the launcher wrote on its own log fd."""
        ...


class Startable(Prepared, Protocol):
    """A prepared run that starts itself (the supervisor calls `start` instead of running
    `argv` as a process of its own)."""

    def start(self, stdout: int, stderr: int) -> Child:
        """Start the run with these write ends as its stdout and stderr; raise OSError when it
        cannot start."""
        ...


class Launcher(Protocol):
    name: str

    @property
    def policy(self) -> Policy | None:
        """The policy files it enforces (None: the unsafe launcher enforces none)."""
        ...

    def limits(self, spec: LaunchSpec) -> dict[str, int]:
        """The numeric limits a run of `spec` gets (what goes into the policy digest)."""
        ...

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> Prepared:
        """Set up one run of `spec.module` with the frame pipe on `frame_fd`; the launcher may
        write its own log to `log_fd`."""
        ...

    def close(self) -> None:
        """Release what the launcher keeps between runs (a zygote); runs may not start after."""
        ...


@dataclass
class _SubprocessRun:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...]
    cpu_limit_s: float
    terminate_signal: int = signal.SIGKILL
    exec_marker: bytes | None = None

    def cpu_used_s(self, pid: int) -> float | None:
        return process_tree_cpu_s(pid)

    def finish(self, returncode: int, log: str, cpu_s: float) -> JailReport:
        if returncode < 0:
            return JailReport(signal=-returncode, cpu_exceeded=-returncode == signal.SIGXCPU)
        return JailReport(exit_code=returncode)


class SubprocessLauncher:
    """A plain child process of the worker's own interpreter (no namespaces, no seccomp, no
    memory limit). Development only: every job logs a warning."""

    name = "unsafe-subprocess"
    policy: Policy | None = None

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def close(self) -> None:
        pass

    def limits(self, spec: LaunchSpec) -> dict[str, int]:
        """Only the supervisor's wall-clock deadline and the CPU check apply."""
        return {"time_limit": math.ceil(spec.wall_s), "rlimit_cpu": math.ceil(spec.cpu_s)}

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> Prepared:
        env = dict(ENV_FIXED)
        env.update({k: os.environ[k] for k in ENV_ALLOW if k in os.environ})
        workdir = spec.out_dir or spec.job_dir
        argv = with_parent_death_signal(
            [
                self.python,
                "-I",  # isolated: no PYTHON* variables, no user site, no cwd on sys.path
                "-m",
                spec.module,
                "--job",
                str(spec.job_dir / "job.json"),
                "--frame-fd",
                str(frame_fd),
                "--out",
                str(workdir),
            ]
        )
        return _SubprocessRun(argv, env, workdir, (frame_fd,), spec.cpu_s)


def process_tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of `pid` and its live descendants, with the children each has reaped."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def make_launcher(sandbox: str, policy_root: Path, reuse: Reuse | None = None) -> Launcher:
    """The launcher `sandbox` names. nsjail is checked now and refuses to start (fail closed)
    when it cannot work; the unsafe launcher is only ever used when asked for. With `reuse.warm`
    (the default) build jobs fork from a zygote, started by the first build (or `prewarm`);
    close the launcher when done with it."""
    if sandbox == "unsafe-subprocess":
        return SubprocessLauncher()
    from worker.sandbox.nsjail import NsjailLauncher  # root, cgroups: only when it is used

    reuse = reuse or Reuse()
    cold = NsjailLauncher(Policy(policy_root))
    if not reuse.warm:
        cold.check()
        return cold
    from worker.sandbox.zygote import Recycling, WarmLauncher

    warm = WarmLauncher(
        cold,
        Recycling(
            jobs=reuse.zygote_jobs,
            max_age_s=reuse.zygote_max_age_s,
            max_growth_bytes=reuse.zygote_max_growth_mb * 2**20,
        ),
    )
    warm.check()
    return warm

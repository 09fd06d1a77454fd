"""Warm build jobs (the supervisor's side): a zygote per worker, one fork per build job.

A cold build jail pays `import build123d` (2–5 s of CPU, ~400 MB) for every source it builds.
The zygote pays it once: one long-lived nsjail jail (sandbox/zygote.cfg, seccomp/zygote.kafel)
whose Python has imported build123d and forks a child per job, which builds its own jail before
any design code runs (`worker.sandbox.zygote_child` says how; sandbox/README.md, "The zygote",
lists every isolation property and where it is proven). This module starts and recycles the
zygote, sends it each job with the job's descriptors, learns the job's host pid from the
credentials the kernel attaches to its `ready` message, moves it into the job's own cgroups
(build.cfg's memory, pids and CPU limits) before it may run, and reads how it ended from the
zygote's reaper, the job's trusted witness.

`WarmLauncher` is the launcher the worker uses by default (`SIMJAIL_WARM=0`: `NsjailLauncher`
alone). Physics jails and anything that is not a build job are cold. A zygote that cannot
start, or breaks, sends that job and the next ones to a cold jail, loudly (`zygote.fallback`),
never to no jail; it is retired after `zygote_jobs` jobs, `zygote_max_age_s`, or when its
memory grew by `zygote_max_growth_mb`, and a fresh one takes over.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from worker.owners import with_parent_death_signal
from worker.sandbox.cgroups import CgroupError, JobCgroups
from worker.sandbox.launcher import Child, Exit, JailReport, LaunchSpec, Prepared
from worker.sandbox.nsjail import (
    JAIL_UID,
    MEMORY_BACKSTOP,
    NsjailLauncher,
    SandboxUnavailable,
    ending,
)
from worker.sandbox.policy import ZYGOTE, JailSettings, Policy, PolicyError, jail_settings
from worker.sandbox.protocol import (
    CONTROL_BYTES,
    ZYGOTE_MODULES,
    ControlMessage,
    JobMount,
    ProtocolError,
    ZygoteJob,
    control_message,
)
from worker.sandbox.seccomp import compile_policy

log = structlog.get_logger("simjail.zygote")

READY_WAIT_S = 180.0
"""How long a zygote may take to import and warm up (a loaded 2-core machine: ~10 s)."""
HANDSHAKE_S = 15.0
"""From sending a job to the zygote to its `running`: a few ms; this only bounds a broken one."""
RETRY_AFTER_S = 30.0
"""After a zygote failed, jobs go cold for this long before another one is started."""
OUTPUT_KEEP = 64 * 1024
"""The last bytes of a zygote's own output and nsjail's log, kept to say why it failed."""
JOB_FILE_SLACK = 64 * 1024
JOB_ARGS = ["--job", "/job/job.json", "--frame-fd", "3", "--out", "/tmp"]
"""A warm job's command line after its module (the frame pipe is fd 3 there)."""


def argv_room(control_fd: int) -> str:
    """Padding for the zygote's last argument so that a job's command line, `python -I -m
    <module> JOB_ARGS`, takes exactly the room of the zygote's, and shows without a tail."""
    job = "\0".join([max(ZYGOTE_MODULES, key=len), *JOB_ARGS])
    zygote = "\0".join(["worker.sandbox.zygote_child", "--control-fd", str(control_fd)])
    return "." * max(1, len(job) - len(zygote) - len("\0--argv-room\0"))


@dataclass(frozen=True)
class Recycling:
    """When a zygote is retired and replaced (its running jobs finish first)."""

    jobs: int = 500
    max_age_s: float = 1800.0
    max_growth_bytes: int = 256 * 2**20


def _recv(sock: socket.socket, timeout_s: float) -> tuple[ControlMessage, int | None]:
    """One control message and the sender's pid (as the kernel attached it, in this process's
    pid namespace). Raises ProtocolError on timeout, EOF or garbage."""
    ready, _, _ = select.select([sock], [], [], timeout_s)
    if not ready:
        raise ProtocolError(f"no answer within {timeout_s:.0f} s")
    data, ancillary, flags, _ = sock.recvmsg(CONTROL_BYTES, socket.CMSG_SPACE(12))
    if not data:
        raise ProtocolError("the socket closed")
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ProtocolError("truncated control message")
    pid = None
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(value) >= 12:
            pid = struct.unpack("iII", value[:12])[0]
    return control_message(data), pid


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (ln.partition(":") for ln in f)}


class ZygoteFailed(RuntimeError):
    pass


class Zygote:
    """One zygote jail. A keeper thread of its own starts nsjail (so `setpriv --pdeathsig`,
    which fires when the *thread* that started it ends, lives as long as the zygote), reads its
    output, and reaps it; `stop` closes its socket, which ends it."""

    def __init__(self, cold: NsjailLauncher) -> None:
        self.cold = cold
        self.policy: Policy = cold.policy
        self.ready = threading.Event()
        self.failed: str | None = None
        self.host_pid: int | None = None
        self.started_at = time.monotonic()
        self.ready_s: float | None = None
        self.rss_at_ready = 0
        self.jobs = 0
        self.in_flight = 0
        self.retiring = False
        self.stopping = False
        self.reported = False
        """Its failure was logged (once)."""
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._output = bytearray()
        ceil = self.policy.ceilings(ZYGOTE)
        self.cgroups = JobCgroups(
            job=f"{os.getpid()}-zygote-{uuid.uuid4().hex[:12]}",
            memory_bytes=ceil["cgroup_mem_max"],
            pids_max=ceil["cgroup_pids_max"],
        )
        self._thread = threading.Thread(target=self._keep, name="zygote", daemon=True)
        self._thread.start()

    # --- the keeper thread --------------------------------------------------------------------

    def _keep(self) -> None:
        try:
            self._run()
        except Exception as e:  # never let the keeper die silently
            self._fail(f"{type(e).__name__}: {e}")
        finally:
            self.ready.set()

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            tail = self._output[-2000:].decode("utf-8", "replace").strip()
            self.failed = reason + (f"; its output ended with: {tail}" if tail else "")

    def _run(self) -> None:
        try:
            self.cgroups.create()
        except CgroupError as e:
            self._fail(str(e))
            return
        sup, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sup.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        out_r, out_w = os.pipe()
        cold = self.cold
        env = {"PATH": "/usr/bin:/bin"} | {k: str(v) for k, v in cold.binds.items()}
        fd = child.fileno()
        argv = with_parent_death_signal([
            str(cold.binary), "--config", str(self.policy.config(ZYGOTE)),
            "--cgroup_mem_max", str(self.cgroups.memory_bytes + MEMORY_BACKSTOP),
            "--cgroup_mem_parent", self.cgroups.relative,
            "--cgroup_pids_parent", self.cgroups.relative,
            "--cgroup_cpu_parent", self.cgroups.cpu_relative,
            *self.cgroups.cpu_args(self.policy.cpu_ms_per_sec(ZYGOTE)),
            "--log_fd", str(out_w),
            "--pass_fd", str(fd),
            "--", str(cold.python), "-I", "-m", "worker.sandbox.zygote_child",
            "--control-fd", str(fd),
            # Room for a job to show its own command line in place of the zygote's.
            "--argv-room", argv_room(fd),
        ])  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                pass_fds=(fd, out_w), env=env, cwd=self.policy.root, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            self._fail(f"nsjail did not start: {e}")
            self.cgroups.remove()
            return
        finally:
            child.close()
            os.close(out_w)
        self._sock = sup
        try:
            self._await_ready(sup, out_r)
            self.ready.set()
            self._read_output(out_r, None)  # until the zygote is gone
            if not self.stopping:  # nobody asked it to end: it broke
                code = self._proc.poll() if self._proc else None
                self._fail(f"the zygote exited on its own (status {code})")
        finally:
            os.close(out_r)
            self._reap()

    def _read_output(self, out_r: int, until: float | None) -> bool:
        """Keep the zygote's output (and nsjail's log) flowing; True once it hit EOF."""
        while until is None or time.monotonic() < until:
            timeout = None if until is None else max(0.0, until - time.monotonic())
            r, _, _ = select.select([out_r], [], [], 1.0 if timeout is None else min(timeout, 1.0))
            if r:
                chunk = os.read(out_r, 65536)
                if not chunk:
                    return True
                self._output += chunk
                del self._output[:-OUTPUT_KEEP]
            elif until is not None:
                return False
        return False

    def _await_ready(self, sup: socket.socket, out_r: int) -> None:
        end = time.monotonic() + READY_WAIT_S
        while time.monotonic() < end:
            r, _, _ = select.select([sup.fileno(), out_r], [], [], 1.0)
            if out_r in r:
                chunk = os.read(out_r, 65536)
                self._output += chunk
                del self._output[:-OUTPUT_KEEP]
            if sup.fileno() in r:
                msg, pid = _recv(sup, 0.0)
                if msg.type != "ready" or pid is None:
                    raise ZygoteFailed(f"the zygote said {msg.type!r} instead of ready")
                st = _status(pid)
                if int(st["Uid"].split()[0]) != JAIL_UID:
                    raise ZygoteFailed(f"the zygote runs as uid {st['Uid']}, not {JAIL_UID}")
                self.host_pid = pid
                self.rss_at_ready = self.rss_bytes()
                self.ready_s = time.monotonic() - self.started_at
                log.info("zygote.ready", host_pid=pid, ready_s=round(self.ready_s, 2))
                return
            if self._proc is not None and self._proc.poll() is not None:
                self._read_output(out_r, time.monotonic() + 1.0)
                raise ZygoteFailed(f"the zygote exited with {self._proc.returncode} at start")
        raise ZygoteFailed(f"the zygote was not ready within {READY_WAIT_S:.0f} s")

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.cgroups.remove()
        if self._sock is not None:
            self._sock.close()

    # --- used by the launcher -----------------------------------------------------------------

    def usable(self) -> bool:
        return self.ready.is_set() and self.failed is None and not self.retiring

    def rss_bytes(self) -> int:
        """The zygote's resident memory (its own pages: a job's copies are charged to the job)."""
        if self.host_pid is None:
            return 0
        with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
            return int(_status(self.host_pid)["VmRSS"].split()[0]) * 1024
        return 0

    def worn_out(self, recycling: Recycling) -> str | None:
        """Why this zygote should be replaced now, or None."""
        if self.jobs >= recycling.jobs:
            return f"it served {self.jobs} jobs"
        if time.monotonic() - self.started_at >= recycling.max_age_s:
            return f"it is {time.monotonic() - self.started_at:.0f} s old"
        grown = self.rss_bytes() - self.rss_at_ready
        if grown >= recycling.max_growth_bytes:
            return f"its memory grew by {grown // 2**20} MiB"
        if self._proc is not None and self._proc.poll() is not None:
            return "it exited"
        return None

    def submit(self, fds: list[int]) -> None:
        """Ask for one job with these descriptors (what the job is goes on its own socket)."""
        sock = self._sock
        if sock is None:
            raise ZygoteFailed("the zygote has no socket")
        with self._lock:
            socket.send_fds(sock, [ControlMessage(type="job").model_dump_json().encode()], fds)

    def stop(self) -> None:
        """End the zygote (its running jobs die with it: retire it first) and wait for it."""
        self.stopping = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        elif self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._thread.join(15.0)

    def pids(self) -> list[int]:
        """Host pids of the zygote's own processes (nsjail and the zygote), not its jobs'."""
        return [p for p in (self._proc.pid if self._proc else None, self.host_pid) if p]


@dataclass(frozen=True)
class ZygoteFacts:
    """What `simjail policy check` reads of a ready zygote from outside (as root, via /proc)."""

    host_pid: int
    threads: int
    """A fork copies the calling thread only: one."""
    shared_writable: list[str]
    """Writable shared mappings (a job's memory must be copies of the zygote's, never shared)."""
    scratch: dict[str, tuple[bool, list[str]]]
    """/tmp, /dev/shm, /job → (read-only, entries): nothing the zygote holds a job could see."""


def facts(pid: int) -> ZygoteFacts:
    threads = len(os.listdir(f"/proc/{pid}/task"))
    shared = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            perms = line.split()[1]
            if perms[1] == "w" and perms[3] == "s":
                shared.append(line.strip())
    ro = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            parts = line.split()
            ro[parts[4]] = "ro" in parts[5].split(",")
    scratch = {
        d: (ro.get(d, False), sorted(os.listdir(f"/proc/{pid}/root{d}")))
        for d in ("/tmp", "/dev/shm", "/job")
    }
    return ZygoteFacts(pid, threads, shared, scratch)


def job_request(
    settings: JailSettings, program: bytes, spec: LaunchSpec, limits: dict[str, int],
    files: list[str], file_bytes: int,
) -> ZygoteJob:  # fmt: skip
    """What the zygote needs to give a job build.cfg's jail: all of it from the policy files
    (the rlimits, tmpfs sizes and cwd of build.cfg, jail.kafel compiled) and the job's limits."""
    rlimits = dict(settings.rlimits)
    rlimits["RLIMIT_CPU"] = limits["rlimit_cpu"]
    return ZygoteJob(
        module=spec.module,  # checked by the caller
        args=JOB_ARGS,
        files=files,
        job_bytes=file_bytes + JOB_FILE_SLACK,
        job_source=str(spec.job_dir.resolve()),
        time_limit_s=limits["time_limit"],
        rlimits=rlimits,
        mounts=[
            JobMount(dst=dst, options=opts)
            for dst, opts in settings.tmpfs.items()
            if dst in ("/tmp", "/dev/shm")
        ],
        seccomp=base64.b64encode(program).decode(),
        cwd=settings.cwd,
    )


class WarmLauncher:
    """The default sandbox: build jobs forked from a zygote, everything else (and every build
    when the zygote is not available) in a cold nsjail jail."""

    name = "nsjail-zygote"

    def __init__(self, cold: NsjailLauncher, recycling: Recycling | None = None) -> None:
        self.cold = cold
        self.recycling = recycling or Recycling()
        try:
            self.job_settings = jail_settings(cold.policy, "build")
            self.program = compile_policy(cold.policy.seccomp_file("build").read_text())
        except PolicyError as e:  # fail closed, saying why
            raise SandboxUnavailable(f"warm builds cannot hold build.cfg's jail: {e}") from e
        self._lock = threading.Lock()
        self._zygote: Zygote | None = None
        self._retired: list[Zygote] = []
        self._down_until = 0.0
        self.counts = {"warm": 0, "cold": 0, "zygotes": 0}
        self.closed = False

    @property
    def policy(self) -> Policy:
        return self.cold.policy

    def check(self) -> None:
        """The cold checks, and the zygote's policy: its file, and the job filter compiled
        from jail.kafel (a policy this compiler cannot express refuses to start)."""
        self.cold.check()
        try:
            self.policy.config(ZYGOTE)
            self.policy.ceilings(ZYGOTE)
            compile_policy(self.policy.seccomp_file(ZYGOTE).read_text())
        except PolicyError as e:
            raise SandboxUnavailable(str(e)) from e

    def limits(self, spec: LaunchSpec) -> dict[str, int]:
        return self.cold.limits(spec)

    def prewarm(self) -> None:
        """Start a zygote now (it imports in the background)."""
        with self._lock:
            self._current()

    def wait_ready(self, timeout_s: float = READY_WAIT_S) -> bool:
        """Wait until the zygote jobs would go to is ready; False if there is none, or it
        failed (builds then run cold until another one is)."""
        with self._lock:
            z = self._current()
        return z is not None and z.ready.wait(timeout_s) and z.usable()

    def _current(self) -> Zygote | None:
        """The zygote jobs go to (started if none), retiring a worn-out one; under the lock."""
        z = self._zygote
        if z is not None and z.ready.is_set():
            why = z.failed or z.worn_out(self.recycling)
            if why is not None:
                if z.failed is not None:
                    self._failed(z, z.failed)
                else:
                    log.info("zygote.recycle", reason=why, jobs=z.jobs)
                z.retiring = True
                self._retired.append(z)
                self._zygote = z = None
        self._stop_idle_retired()
        if z is None and not self.closed and time.monotonic() >= self._down_until:
            z = self._zygote = Zygote(self.cold)
            self.counts["zygotes"] += 1
        return z

    def _failed(self, z: Zygote, reason: str) -> None:
        """Under the lock: `z` is broken. Said once, loudly; builds go cold for a while."""
        if z.failed is None:
            z.failed = reason
        if not z.reported:
            z.reported = True
            log.error("zygote.failed", reason=z.failed, jobs=z.jobs)
            self._down_until = time.monotonic() + RETRY_AFTER_S

    def _stop_idle_retired(self) -> None:
        for old in [r for r in self._retired if r.in_flight == 0]:
            self._retired.remove(old)
            threading.Thread(target=old.stop, name="zygote-stop", daemon=True).start()

    def acquire(self) -> tuple[Zygote | None, str]:
        """A ready zygote for one job (None and why not: the job then runs cold)."""
        with self._lock:
            z = self._current()
        if z is None:
            return None, "no zygote is available (one failed recently)"
        if not z.ready.wait(READY_WAIT_S) or not z.usable():
            with self._lock:
                self._current()  # retires it if it failed
            return None, f"the zygote is not usable: {z.failed or 'not ready'}"
        with self._lock:
            z.in_flight += 1
            z.jobs += 1
        return z, ""

    def release(self, z: Zygote, broken: str | None = None) -> None:
        with self._lock:
            z.in_flight -= 1
            if broken is not None:
                self._failed(z, broken)
            if z.retiring:
                self._stop_idle_retired()

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> Prepared:
        if spec.jail != "build" or spec.module not in ZYGOTE_MODULES or self.closed:
            return self.cold.prepare(spec, frame_fd=frame_fd, log_fd=log_fd)
        return WarmRun(self, spec, frame_fd, log_fd)

    def facts(self) -> ZygoteFacts:
        """Of the zygote jobs go to now (started if need be); ZygoteFailed if there is none."""
        z, why = self.acquire()
        if z is None:
            raise ZygoteFailed(why)
        try:
            assert z.host_pid is not None
            return facts(z.host_pid)
        finally:
            z.jobs -= 1  # looked at, not used
            self.release(z)

    def zygote_pids(self) -> list[int]:
        """Host pids of the zygotes' own processes (not their jobs'): the worker's, not a job's."""
        with self._lock:
            zs = [z for z in (self._zygote, *self._retired) if z is not None]
        return [p for z in zs for p in z.pids()]

    def close(self) -> None:
        with self._lock:
            self.closed = True
            zs = [z for z in (self._zygote, *self._retired) if z is not None]
            self._zygote, self._retired = None, []
        for z in zs:
            z.stop()


@dataclass
class WarmRun:
    """One build job for the zygote; runs cold (loudly) when the zygote cannot take it."""

    launcher: WarmLauncher
    spec: LaunchSpec
    frame_fd: int
    log_fd: int
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = Path("/")
    pass_fds: tuple[int, ...] = ()
    fallback: Prepared | None = None
    """The cold run this job went to instead (why: `fallback_reason`)."""
    fallback_reason: str = ""
    child: WarmChild | None = None

    def __post_init__(self) -> None:
        cold = self.launcher.cold
        self.env = {k: str(v) for k, v in cold.binds.items()} | {"SIMJAIL_JOB_DIR": "/job"}
        self.cwd = cold.policy.root
        self.limits = cold.limits(self.spec)
        self.cpu_limit_s = self.spec.cpu_s
        self.warm_cgroups = JobCgroups(
            job=f"{os.getpid()}-{self.spec.jail}-{uuid.uuid4().hex[:12]}",
            memory_bytes=self.limits["cgroup_mem_max"],
            pids_max=self.limits["cgroup_pids_max"],
            cpu_ms_per_sec=self.launcher.job_settings.cgroup_cpu_ms_per_sec or None,
        )

    @property
    def terminate_signal(self) -> int:
        """SIGKILL to the job itself (no nsjail in between), or the cold run's."""
        return self.fallback.terminate_signal if self.fallback else signal.SIGKILL

    @property
    def exec_marker(self) -> bytes | None:
        """A warm job reports its start itself (WarmChild.start_latency_s); a cold run's
        nsjail logs it."""
        return self.fallback.exec_marker if self.fallback else None

    @property
    def cgroups(self) -> JobCgroups:
        """The groups the job runs in (the cold run's after a fallback)."""
        inner = getattr(self.fallback, "cgroups", None)
        return inner if isinstance(inner, JobCgroups) else self.warm_cgroups

    def cpu_used_s(self, pid: int) -> float | None:
        if self.fallback is not None:
            return self.fallback.cpu_used_s(pid)
        return self.warm_cgroups.cpu_time_s()

    def start(self, stdout: int, stderr: int) -> Child:
        from worker import metrics

        z, why = self.launcher.acquire()
        if z is not None:
            try:
                self.child = self._start_warm(z, stdout, stderr)
                self.launcher.counts["warm"] += 1
                metrics.build_started("warm")
                return self.child
            except Exception as e:  # whatever went wrong, no design code ran: go cold
                why = f"the zygote could not start the job: {type(e).__name__}: {e}"
                self.launcher.release(z, broken=why)
            self.warm_cgroups.remove()
        return self._start_cold(why, stdout, stderr)

    def _start_cold(self, why: str, stdout: int, stderr: int) -> Child:
        from worker import metrics

        log.warning("zygote.fallback", phase=self.spec.name, reason=why, detail="cold jail")
        metrics.build_started("cold_fallback")
        self.launcher.counts["cold"] += 1
        self.fallback_reason = why
        self.fallback = self.launcher.cold.prepare(
            self.spec, frame_fd=self.frame_fd, log_fd=self.log_fd
        )
        start = getattr(self.fallback, "start")  # noqa: B009  # a cold nsjail run
        child: Child = start(stdout, stderr)
        return child

    def _start_warm(self, z: Zygote, stdout: int, stderr: int) -> WarmChild:
        t0 = time.monotonic()
        self.warm_cgroups.create()
        names = sorted(p.name for p in self.spec.job_dir.iterdir() if p.is_file())
        files = []
        try:
            for name in names:  # the supervisor's own files: job.json (and input.step)
                files.append(os.open(self.spec.job_dir / name, os.O_RDONLY | os.O_NOFOLLOW))
            size = sum(os.fstat(fd).st_size for fd in files)
            job = job_request(
                self.launcher.job_settings, self.launcher.program, self.spec, self.limits,
                names, size,
            )  # fmt: skip
            sup, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sup.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            try:
                sup.send(job.model_dump_json().encode())  # for the zygote's child, not the zygote
                z.submit([stdout, stderr, self.frame_fd, self.log_fd, mine.fileno(), *files])
            finally:
                mine.close()
        finally:
            for fd in files:
                os.close(fd)
        child = WarmChild(self, z, sup)
        try:
            msg, pid = _recv(sup, HANDSHAKE_S)
            if msg.type != "ready" or pid is None:
                raise ZygoteFailed(f"the job said {msg.type!r} {msg.reason!r} instead of ready")
            child.attach(pid)
            self.warm_cgroups.add(pid)  # before the job may run anything
            sup.send(ControlMessage(type="go").model_dump_json().encode())
            msg, _ = _recv(sup, HANDSHAKE_S)
            if msg.type != "running":
                raise ZygoteFailed(f"the job said {msg.type!r} {msg.reason!r} instead of running")
        except BaseException:
            child.discard()
            raise
        child.start_latency_s = time.monotonic() - t0
        return child

    def finish(self, returncode: int, log: str, cpu_s: float) -> JailReport:
        if self.fallback is not None:
            self.warm_cgroups.remove()
            report = self.fallback.finish(returncode, log, cpu_s)
            return dataclasses.replace(report, notes=(*report.notes, "cold fallback"))
        if self.child is None:  # never started
            self.warm_cgroups.remove()
            return JailReport(launch_error="the warm job never started")
        usage = self.warm_cgroups.usage()
        self.warm_cgroups.remove()
        status = self.child.status
        if status is None:  # the reaper never reported: the zygote died under the job
            self.launcher.release(self.child.zygote, broken="a job's reaper never reported")
            return JailReport(
                launch_error="the zygote died under the job (no word from its reaper)"
            )
        self.launcher.release(self.child.zygote)
        return ending(
            status.exit_code,
            status.signal,
            status.timed_out,
            cpu_s,
            self.cpu_limit_s,
            usage.memory_limit_hit,
            usage.peak_memory_bytes,
        )


class WarmChild:
    """A running warm job: its pid (through a pidfd: no reuse race), its control socket, on
    which the reaper reports how it ended."""

    def __init__(self, run: WarmRun, zygote: Zygote, sock: socket.socket) -> None:
        self.run = run
        self.zygote = zygote
        self.sock = sock
        self.pid = 0
        self.pidfd: int | None = None
        self.status: ControlMessage | None = None
        self.start_latency_s: float | None = None
        self._exit: Exit | None = None

    def attach(self, pid: int) -> None:
        """Check that `pid` is the job (PID 1 of a pid namespace two levels below this one,
        a descendant of the zygote, uid 65534) and hold it by a pidfd."""
        pidfd = os.pidfd_open(pid)
        st = _status(pid)
        levels = st.get("NSpid", "").split()
        if len(levels) != 3 or levels[-1] != "1" or int(st["Uid"].split()[0]) != JAIL_UID:
            os.close(pidfd)
            raise ZygoteFailed(f"pid {pid} is not a job of the zygote ({st.get('NSpid')})")
        ancestor, seen = pid, 0
        while ancestor not in (0, 1, self.zygote.host_pid) and seen < 4:
            ancestor, seen = int(_status(ancestor)["PPid"]), seen + 1
        if ancestor != self.zygote.host_pid:
            os.close(pidfd)
            raise ZygoteFailed(f"pid {pid} does not descend from the zygote")
        self.pid, self.pidfd = pid, pidfd

    def discard(self) -> None:
        """The job never ran design code: kill it and let go of it."""
        self.kill_all()
        self._close()

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None

    def poll(self) -> Exit | None:
        if self._exit is not None:
            return self._exit
        while self.status is None:
            try:
                data = self.sock.recv(CONTROL_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            if not data:  # the reaper is gone without a word
                break
            try:
                msg = control_message(data)
            except ProtocolError:
                continue
            if msg.type == "status":
                self.status = msg
        cpu = self.run.warm_cgroups.cpu_time_s() or 0.0
        if self.status is not None:
            code = -self.status.signal if self.status.signal else (self.status.exit_code or 0)
            cpu = max(cpu, self.status.cpu_s)
        else:
            code = -signal.SIGKILL
        usage = self.run.warm_cgroups.usage()
        peak = (usage.peak_memory_bytes or 0) / 2**20
        self._exit = Exit(code, cpu, peak)
        self._close()
        return self._exit

    def signal(self, sig: int) -> None:
        if self.pidfd is not None and self._exit is None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def kill_all(self) -> None:
        self.signal(signal.SIGKILL)
        self.run.warm_cgroups.kill()

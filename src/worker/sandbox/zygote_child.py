"""The zygote: runs inside its own jail (sandbox/zygote.cfg, seccomp/zygote.kafel), imports
build123d once and forks one warm build job per request of its supervisor. Trusted code: it never
runs a design. Each job gets, before any design code runs, every isolation property a cold build
jail has (sandbox/README.md, "The zygote"):

    zygote ── fork ──▶ reaper: unshare(mount, pid, net, ipc, uts), then fork
                         └─ fork ──▶ job: PID 1 of its own pid namespace, its own session;
                                     `ready` (the supervisor learns its host pid from the
                                     credentials and moves it into the job's cgroups meanwhile);
                                     fresh /proc, /tmp, /dev/shm, /job (the job's files, read-only);
                                     fds 0-3 only; the cold command line; build.cfg's cwd and
                                     rlimits; `go` (it is in its cgroups); its own cgroup
                                     namespace; every capability dropped; seccomp/jail.kafel on
                                     top of the zygote's filter; `running`
                                     → the build child's main(), as `python -m` would run it

The reaper (outside the job's pid namespace, where no design code can reach it) enforces the
time limit, waits for the job and reports how it ended on the job's control socket: the
supervisor's trusted source, as nsjail's log is for a cold jail.

    python -I -m worker.sandbox.zygote_child --control-fd N --argv-room ........
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import gc
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from worker.sandbox.protocol import (
    CONTROL_BYTES,
    ZYGOTE_FDS,
    ZYGOTE_JOB_BYTES,
    ControlMessage,
    ProtocolError,
    ZygoteJob,
    control_message,
    zygote_job,
)

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x2000, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 22, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
SECCOMP_MODE_FILTER = 2
SYS_CAPSET = 126
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SETUP_FAILED = 125
"""Exit status of a job whose jail could not be completed (it ran no design code)."""
GO_WAIT_S = 60.0
MAX_FDS = 16
FLAG_BITS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


class SetupError(RuntimeError):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = [None if s is None else s.encode() for s in (src, dst, fstype, data)]
    _check(LIBC.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {dst}")


def _umount(dst: str) -> None:
    _check(LIBC.umount2(dst.encode(), MNT_DETACH), f"umount {dst}")


def _prctl(option: int, arg: object = 0) -> None:
    _check(LIBC.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def _send(fd: int, msg: ControlMessage) -> None:
    os.write(fd, msg.model_dump_json(exclude_defaults=True).encode())


# --- the job's own jail, built inside the fresh namespaces ---------------------------------------


def _mountinfo() -> list[tuple[int, int, str, int]]:
    """(id, parent id, mount point, per-mount flags) of every mount this process sees."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        point = f[4].encode().decode("unicode_escape")  # \040 for a space
        flags = sum(FLAG_BITS.get(o, 0) for o in f[5].split(","))
        out.append((int(f[0]), int(f[1]), point, flags))
    return out


def _fresh_mounts(job: ZygoteJob, files: list[int]) -> None:
    """Replace the zygote's /proc, /tmp, /dev/shm and /job with the job's own. Binds that nsjail
    placed under the zygote's /tmp (a checkout or venv under the host's /tmp) are carried over,
    read-only as they were."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates to or from the zygote
    table = _mountinfo()
    tmp_ids = {mid for mid, _, point, _ in table if point == "/tmp"}
    carried = [(point, flags) for _, parent, point, flags in table if parent in tmp_ids]
    carried_fds = [os.open(point, os.O_PATH | os.O_CLOEXEC) for point, _ in carried]
    # /job: the job's files, in a tmpfs of their size, read-only once written.
    _umount("/job")
    _mount(job.job_source, "/job", "tmpfs", 0, f"size={job.job_bytes},nr_inodes=16,mode=0755")
    for name, fd in zip(job.files, files, strict=True):
        with open(f"/job/{name}", "xb") as out, os.fdopen(fd, "rb", closefd=True) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    stage = "/job/.stage"
    os.mkdir(stage)
    # /proc of the job's own pid namespace, read-only, as nsjail's mount_proc.
    _mount("proc", stage, "proc", MS_RDONLY, None)
    _umount("/proc")
    _mount(stage, "/proc", None, MS_MOVE, None)
    # /tmp: a fresh tmpfs, with what nsjail bound under the zygote's /tmp bound again.
    options = {m.dst: m.options for m in job.mounts}
    _mount("tmpfs", stage, "tmpfs", 0, options["/tmp"])
    for (point, flags), fd in zip(carried, carried_fds, strict=True):
        target = stage + point.removeprefix("/tmp")
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "x").close()
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | flags, None)
        os.close(fd)
    _umount("/tmp")
    _mount(stage, "/tmp", None, MS_MOVE, None)
    _umount("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", 0, options["/dev/shm"])
    os.rmdir(stage)
    _mount(None, "/job", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)


def _rlimits(job: ZygoteJob) -> None:
    for name, value in job.rlimits.items():
        limit = resource.RLIM_INFINITY if value is None else value
        try:
            resource.setrlimit(getattr(resource, name), (limit, limit))
        except (OSError, ValueError, AttributeError) as e:
            raise SetupError(f"setrlimit {name}={value}: {e}") from None


def _only_job_fds(stdout: int, stderr: int, frames: int, control: int) -> None:
    """0 /dev/null, 1 stdout, 2 stderr, 3 the frame pipe, 4 the control socket; nothing else
    (the zygote's socket, the reaper's log, the job files were closed or are closed now)."""
    devnull = os.open("/dev/null", os.O_RDONLY)
    high = [
        fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (devnull, stdout, stderr, frames, control)
    ]
    for fd in {devnull, stdout, stderr, frames, control}:
        os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, i)
    os.closerange(5, 1 << 20)


def _retitle(module: str, args: list[str]) -> None:
    """This process's command line (what /proc/<pid>/cmdline and ps show, inside the job and on
    the host) made the cold jail's, `python -I -m <module> <args>`, in place: the zygote was
    started with room for it (`--argv-room`)."""
    stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start, end = int(stat[45]), int(stat[46])  # arg_start, arg_end (fields 48 and 49)
    python = Path("/proc/self/cmdline").read_bytes().split(b"\0", 1)[0]
    title = b"\0".join([python, b"-I", b"-m", module.encode(), *(a.encode() for a in args)])
    if len(title) + 1 > end - start:
        raise SetupError(f"no room for the job's command line ({len(title)} > {end - start})")
    ctypes.memmove(start, title.ljust(end - start, b"\0"), end - start)


def _drop_capabilities() -> None:
    """Every capability gone, the bounding set included; no_new_privs stays set."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _check(LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient caps")
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable × 2 words: all zero
    _check(LIBC.syscall(SYS_CAPSET, header, data), "capset")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_filter(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def _job(job: ZygoteJob, fds: dict[str, int], files: list[int]) -> NoReturn:
    """PID 1 of the job's pid namespace: complete its jail, then run the module's main()."""
    control = fds["control"]
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the reaper gone: the job too
        # Its own session and process group, as nsjail gives a cold jail: kill(0) and
        # setpriority(PRIO_PGRP) reach a process group whatever its pid namespace, and the
        # zygote's group holds the zygote and every job's reaper.
        os.setsid()
        os.close(fds["log"])  # the reaper's; a design never writes to it
        # `ready` first: the supervisor moves this process into the job's cgroups (~10 ms
        # for the memory controller on cgroup v1) while it builds its jail; it waits for `go`
        # before anything that is not this module's own code runs.
        _send(control, ControlMessage(type="ready"))
        _fresh_mounts(job, files)
        _only_job_fds(fds["stdout"], fds["stderr"], fds["frames"], control)
        control = 4
        _retitle(job.module, job.args)
        os.chdir(job.cwd)
        _rlimits(job)
        ready, _, _ = select.select([control], [], [], GO_WAIT_S)
        if not ready or control_message(os.read(control, 4096)).type != "go":
            os._exit(SETUP_FAILED)
        os.unshare(CLONE_NEWCGROUP)  # after the move: its own cgroups are the root it sees
        _drop_capabilities()
        _install_filter(base64.b64decode(job.seccomp))
    except (OSError, SetupError, ProtocolError, ValueError) as e:
        with contextlib.suppress(OSError):
            _send(control, ControlMessage(type="failed", reason=str(e)[:2000]))
        os._exit(SETUP_FAILED)
    _send(control, ControlMessage(type="running"))
    os.close(control)
    gc.enable()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # the zygote's seed is every job's: draw a fresh one, as a cold start
    module = sys.modules[job.module]  # imported by warm_up
    sys.argv = [str(module.__file__), *job.args]
    try:
        module.main()  # as `python -m` runs it; main() leaves through exit_now
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _log(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, f"[I][zygote] {line}\n".encode())


def _reaper(received: list[int]) -> NoReturn:
    """The zygote's child for one job: reads what the job is from its control socket, makes its
    namespaces, forks the job into them, enforces its time limit and reports how it ended."""
    fds = dict(zip(ZYGOTE_FDS, received, strict=False))
    control, log = fds["control"], fds["log"]
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        ready, _, _ = select.select([control], [], [], GO_WAIT_S)
        if not ready:
            raise SetupError("no job description came")
        job = zygote_job(os.read(control, ZYGOTE_JOB_BYTES + 1))
        files = received[len(ZYGOTE_FDS) :]
        if len(files) != len(job.files):
            raise SetupError(f"{len(files)} file descriptors for {len(job.files)} files")
        os.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        pid = os.fork()
    except (OSError, SetupError, ProtocolError) as e:
        with contextlib.suppress(OSError):
            _send(control, ControlMessage(type="failed", reason=f"reaper: {e}"))
        os._exit(0)
    if pid == 0:
        _job(job, fds, files)
    for fd in (fds["stdout"], fds["stderr"], fds["frames"], *files):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(control, 0)  # only hang-ups: the job reads this socket, not the reaper
    deadline = time.monotonic() + job.time_limit_s
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            _log(log, f"pid={pid} run time >= time limit ({job.time_limit_s} s): killing it")
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            break
        events = dict(poller.poll(left * 1000))
        if pidfd in events:
            break
        if events.get(control, 0) & (select.POLLHUP | select.POLLERR):
            _log(log, f"pid={pid}: the supervisor left; killing the job")
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            break
    _, status, usage = os.wait4(pid, 0)
    cpu_s = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        _log(log, f"pid={pid} terminated with signal: {signal.Signals(sig).name} ({sig})")
        msg = ControlMessage(type="status", signal=sig, timed_out=timed_out, cpu_s=cpu_s)
    else:
        code = os.WEXITSTATUS(status)
        _log(log, f"pid={pid} exited with status: {code}")
        msg = ControlMessage(type="status", exit_code=code, timed_out=timed_out, cpu_s=cpu_s)
    with contextlib.suppress(OSError):
        _send(control, msg)
    os._exit(0)


# --- the zygote ---------------------------------------------------------------------------------


def warm_up() -> None:
    """Everything a build job imports, imported once here, and what extract_geometry does to a
    box done once (its code paged in, OpenCascade's lazy state made), so a job's first line runs
    without the import. Not tessellation: that starts OpenCascade's thread pool, and a zygote
    forks with one thread only (`serve` refuses otherwise)."""
    from worker.simulation.imports import defer_unused_imports

    defer_unused_imports()
    from build123d import Box, CenterOf, Pos, Shape

    import worker.sandbox.build_child
    import worker.sandbox.probe_child
    import worker.simulation.cad  # noqa: F401

    box = Pos(1, 2, 3) * Box(1, 1, 1)
    for leaf in box.leaves:
        placed = Shape.cast(leaf.wrapped.Located(leaf.global_location.wrapped))
        placed.solids()[0].bounding_box()
        placed.center(CenterOf.MASS)
        _ = placed.volume, placed.matrix_of_inertia


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _reap_finished() -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return


def serve(sock: socket.socket) -> None:
    """One reaper per request until the supervisor closes its end. A request carries the job's
    descriptors and nothing else: what the job is (its limits, its files' names and sizes, its
    directory) goes to the reaper on the job's own control socket, so that no job's data ever
    sits in the zygote's memory, of which every later job gets a copy."""
    while True:
        _reap_finished()
        ready, _, _ = select.select([sock], [], [], 1.0)
        if not ready:
            continue
        data, fds, flags, _ = socket.recv_fds(sock, CONTROL_BYTES, MAX_FDS)
        if not data and not fds:
            return  # the supervisor is gone
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ProtocolError("truncated job request")
            if control_message(data).type != "job" or len(fds) < len(ZYGOTE_FDS):
                raise ProtocolError(f"not a job request ({len(fds)} descriptors)")
        except ProtocolError as e:
            if len(fds) >= len(ZYGOTE_FDS):
                with contextlib.suppress(OSError):
                    _send(
                        fds[ZYGOTE_FDS.index("control")],
                        ControlMessage(type="failed", reason=str(e)),
                    )
            for fd in fds:
                os.close(fd)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            with contextlib.suppress(OSError):
                _send(
                    fds[ZYGOTE_FDS.index("control")],
                    ControlMessage(type="failed", reason=f"fork: {e}"),
                )
            pid = -1
        if pid == 0:
            os.close(sock.detach())  # the zygote's socket never reaches a job
            _reaper(fds)
        for fd in fds:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--control-fd", type=int, required=True)
    ap.add_argument("--argv-room", default="", help="room in argv for a job's command line")
    args = ap.parse_args()
    sock = socket.socket(fileno=args.control_fd)
    gc.disable()  # no collection may touch (and so copy) the zygote's pages in a job
    warm_up()
    gc.freeze()
    if threads() != 1:  # fork copies the calling thread only: refuse to be a zygote
        print(f"zygote: {threads()} threads after the warm-up; refusing to fork", file=sys.stderr)
        os._exit(3)
    sock.sendall(ControlMessage(type="ready").model_dump_json(exclude_defaults=True).encode())
    serve(sock)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

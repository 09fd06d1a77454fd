"""The child of `simjail policy check` (and of the render probe at worker start): reports, from
inside a real jail, what holds there (identity, limits, capabilities, seccomp, mounts,
interfaces, which forbidden calls are really refused) and, for the physics jail, renders one
frame offscreen. Trusted code: it runs no design. It sends a progress frame once it has looked
(the supervisor reads the jail's cgroups from outside then), and its report as the result.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from worker.sandbox.child import exit_now, parse_args, send
from worker.sandbox.protocol import ProbeJob, ProbeReport, ProgressFrame, ResultFrame

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
X32_BIT = 0x40000000
SYS_GETPID, SYS_PTRACE, SYS_UNSHARE = 39, 101, 272
SYS_CLONE, SYS_PIVOT_ROOT, SYS_SETNS, SYS_CLONE3 = 56, 155, 308, 435
CLONE_NEWNS, SIGCHLD = 0x20000, 17
SIOCGIFFLAGS, IFF_UP = 0x8913, 0x1


def limits() -> dict[str, tuple[int | None, int | None]]:
    out: dict[str, tuple[int | None, int | None]] = {}
    for line in Path("/proc/self/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        out[name] = tuple(None if v == "unlimited" else int(v) for v in (soft, hard))  # type: ignore[assignment]
    return out


def mounts() -> tuple[list[tuple[str, bool]], dict[str, int]]:
    points, tmpfs = [], {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        point, options = f[4], f[5].split(",")
        points.append((point, "ro" in options))
        fstype, super_options = f[f.index("-") + 1], f[f.index("-") + 3]
        if fstype == "tmpfs":
            for opt in super_options.split(","):
                if opt.startswith("size=") and opt.endswith("k"):
                    tmpfs[point] = int(opt[5:-1]) * 1024
    return points, tmpfs


def interfaces_up() -> list[str]:
    """The network interfaces that are up (a new network namespace has `lo`, down)."""
    names = [ln.split(":")[0].strip() for ln in Path("/proc/net/dev").read_text().splitlines()[2:]]
    up = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            ifreq = struct.pack("16sH14x", name.encode(), 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
            if flags & IFF_UP:
                up.append(name)
    return up


def in_child(call: Callable[[], object]) -> int:
    """How a forked child that makes `call` ends: -31 when seccomp killed it (SIGSYS), 0 when
    the call returned."""
    pid = os.fork()
    if pid == 0:
        try:
            call()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


DENIED: dict[str, Callable[[], object]] = {
    "ptrace": lambda: LIBC.syscall(SYS_PTRACE, 0, 0, 0, 0),
    "unshare(CLONE_NEWUSER)": lambda: LIBC.syscall(SYS_UNSHARE, 0x10000000),
    "socket(AF_VSOCK)": lambda: socket.socket(40, socket.SOCK_STREAM),
    "socket(AF_NETLINK)": lambda: socket.socket(16, socket.SOCK_RAW),
    "inotify_init1": lambda: LIBC.inotify_init1(0),
    # The calls a warm job's zygote may make and the job may not (seccomp/zygote.kafel):
    "mount": lambda: LIBC.mount(b"none", b"/tmp", b"tmpfs", 0, None),
    "umount2": lambda: LIBC.umount2(b"/tmp", 0),
    "unshare(CLONE_NEWNS)": lambda: LIBC.syscall(SYS_UNSHARE, CLONE_NEWNS),
    "clone(CLONE_NEWNS)": lambda: LIBC.syscall(SYS_CLONE, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0),
    "setns": lambda: LIBC.syscall(SYS_SETNS, 0, 0),
    "pivot_root": lambda: LIBC.syscall(SYS_PIVOT_ROOT, b"/", b"/"),
}


def open_fds() -> list[int]:
    """The descriptors this process has (the listing's own is gone again)."""
    listed = [int(f) for f in os.listdir("/proc/self/fd")]
    alive = []
    for fd in listed:
        try:
            os.fstat(fd)
        except OSError:
            continue
        alive.append(fd)
    return sorted(alive)


def clone3_errno() -> int | None:
    """errno of clone3 (ENOSYS from the filter, so glibc falls back to clone, whose flags the
    filter can read); None if it went through."""
    ctypes.set_errno(0)
    rc = LIBC.syscall(ctypes.c_long(SYS_CLONE3), None, ctypes.c_long(0))
    return ctypes.get_errno() if rc == -1 else None


def x32_errno() -> int | None:
    ctypes.set_errno(0)
    rc = LIBC.syscall(ctypes.c_long(X32_BIT | SYS_GETPID))
    return ctypes.get_errno() if rc == -1 else None


def render_mean() -> float:
    import mujoco

    m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
    r = mujoco.Renderer(m, 64, 64)
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    r.update_scene(d)
    mean = float(r.render().mean())
    r.close()
    return mean


def main() -> None:
    fds = open_fds()  # before anything here opens one
    args = parse_args()
    chan = args.channel()
    status = {
        k: v.strip()
        for k, _, v in (
            ln.partition(":") for ln in Path("/proc/self/status").read_text().splitlines()
        )
        if k.startswith("Cap") or k in ("NoNewPrivs", "Seccomp", "Seccomp_filters")
    }
    points, tmpfs = mounts()
    report = ProbeReport(
        uid=os.getuid(),
        gid=os.getgid(),
        pid=os.getpid(),
        hostname=socket.gethostname(),
        # As exec'd by the jail: importing worker.simulation sets MUJOCO_GL in os.environ,
        # which /proc/self/environ does not show.
        env_keys=sorted(
            kv.split(b"=", 1)[0].decode()
            for kv in Path("/proc/self/environ").read_bytes().split(b"\0")
            if kv
        ),
        out_writable=os.access(args.out, os.W_OK),
        limits=limits(),
        uid_map=" ".join(Path("/proc/self/uid_map").read_text().split()),
        gid_map=" ".join(Path("/proc/self/gid_map").read_text().split()),
        status=status,
        interfaces=interfaces_up(),
        mounts=points,
        tmpfs_bytes=tmpfs,
        x32_errno=x32_errno(),
        clone3_errno=clone3_errno(),
        fds=fds,
        frame_fd=args.frame_fd,
        denied={name: in_child(call) for name, call in DENIED.items()},
    )
    send(chan, ProgressFrame(type="progress", phase="looked"))
    time.sleep(0.5)  # alive while the supervisor reads the jail's cgroups
    if ProbeJob.read(args.job_path).render:
        report = report.model_copy(update={"rendered_mean": render_mean()})
    send(chan, ResultFrame(payload=report.model_dump(mode="json")))
    exit_now()


if __name__ == "__main__":
    main()

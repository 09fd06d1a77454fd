"""Hostile designs that try to read, reach or change what lies outside the build jail.

Each design really tries, and reports what it got through a channel that comes back (the
message of an exception becomes the result's reason; stdout lands in the logs artifact). The
test then asserts that the attempt failed and the exact failure kind; the harness additionally
checks that the worker's canaries never appear in anything the job returned.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import worker
from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

SECRET_ENV = "SIMJAIL_TEST_CANARY_SECRET"
SECCOMP_KILLED = "The design build step made a forbidden system call and was killed."

# Designs end with `report(obj)`: raise with the JSON of what the attack got, so it comes back
# in the result's reason as a USER_CODE_ERROR.
PRELUDE = """
import json
def report(obj):
    raise RuntimeError("REPORT" + json.dumps(obj) + "REPORT")
"""


def reported(r: SimulationResult) -> Any:
    assert r.failure == FailureKind.USER_CODE_ERROR, r.reason
    m = re.search(r"REPORT(.*)REPORT", r.reason)
    assert m, r.reason
    return json.loads(m.group(1))


def test_read_etc_shadow(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
def build():
    try:
        report({"read": open("/etc/shadow").read()})
    except OSError as e:
        report({"error": type(e).__name__})
"""
    )
    assert reported(r) == {"error": "FileNotFoundError"}


def test_read_etc_passwd(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
import os
def build():
    try:
        report({"read": open("/etc/passwd").read()})
    except OSError as e:
        report({"error": type(e).__name__, "etc": sorted(os.listdir("/etc"))})
"""
    )
    # Only the loader cache is bound into /etc.
    assert reported(r) == {"error": "FileNotFoundError", "etc": ["ld.so.cache"]}


def test_read_worker_environment_via_os_environ(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
import os
def build():
    print(dict(os.environ), flush=True)  # the values go to the logs artifact
    report(sorted(os.environ))
"""
    )
    keys = reported(r)
    assert "HOME" in keys  # the dump really happened
    assert SECRET_ENV not in keys
    assert not [k for k in keys if k.startswith(("SIMJAIL", "AWS", "TEMPORAL"))]


def test_read_worker_environment_via_proc_environ(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
def build():
    got = {}
    for p in ("/proc/1/environ", "/proc/self/environ", "/proc/thread-self/environ"):
        raw = open(p, "rb").read()
        print(p, raw, flush=True)
        got[p] = sorted(kv.split(b"=", 1)[0].decode() for kv in raw.split(b"\\0") if kv)
    report(got)
"""
    )
    got = reported(r)
    assert set(got) == {"/proc/1/environ", "/proc/self/environ", "/proc/thread-self/environ"}
    for keys in got.values():
        assert "HOME" in keys
        assert SECRET_ENV not in keys
        assert not [k for k in keys if k.startswith(("SIMJAIL", "AWS", "TEMPORAL"))]


def test_read_canary_file_in_worker_home(run_design: RunDesign, canaries: Any) -> None:
    path = str(canaries.home_file)
    r = run_design(
        PRELUDE
        + f"""
import os
from pathlib import Path
P = {path!r}
def build():
    got = {{"home": str(Path.home())}}
    for p in (P, os.path.join(str(Path.home()), os.path.basename(P))):
        try:
            got[p] = open(p).read()
        except OSError as e:
            got[p] = type(e).__name__
    report(got)
"""
    )
    got = reported(r)
    assert got == {
        "home": "/tmp",
        path: "FileNotFoundError",
        "/tmp/" + canaries.home_file.name: "FileNotFoundError",
    }


def test_list_proc_and_read_other_processes(run_design: RunDesign) -> None:
    worker_pid = os.getpid()
    r = run_design(
        PRELUDE
        + f"""
import os
WORKER = {worker_pid}
def build():
    got = {{"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}}
    for pid in (*got["pids"], WORKER, WORKER + 1):
        for f in ("cmdline", "environ"):
            try:
                got[f"{{pid}}/{{f}}"] = open(f"/proc/{{pid}}/{{f}}", "rb").read().decode()
            except OSError as e:
                got[f"{{pid}}/{{f}}"] = type(e).__name__
    report(got)
"""
    )
    got = reported(r)
    assert got["pids"] == [1]  # only the jail's own process
    assert "worker.sandbox.build_child" in got["1/cmdline"]
    for pid in (worker_pid, worker_pid + 1):
        assert got[f"{pid}/cmdline"] == "FileNotFoundError"
        assert got[f"{pid}/environ"] == "FileNotFoundError"


def test_connect_to_loopback_listener(
    run_design: RunDesign, loopback_listener: tuple[int, list[bytes]]
) -> None:
    port, received = loopback_listener
    r = run_design(
        PRELUDE
        + f"""
import socket
def build():
    got = {{}}
    for name, fam, kind, addr in (
        ("tcp4", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", {port})),
        ("tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("::1", {port})),
        ("udp4", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", {port})),
    ):
        s = socket.socket(fam, kind)
        s.settimeout(2)
        try:
            s.connect(addr)
            s.sendall(b"exfiltrated")
            got[name] = "sent"
        except OSError as e:
            got[name] = e.errno
        finally:
            s.close()
    report(got)
"""
    )
    got = reported(r)
    assert got == {
        "tcp4": errno.ENETUNREACH,
        "tcp6": errno.EADDRNOTAVAIL,
        "udp4": errno.ENETUNREACH,
    }
    time.sleep(0.5)  # the listener polls accept() every 0.2 s
    assert received == []


@pytest.fixture
def loopback_resolver() -> Iterator[list[bytes]]:
    """A DNS server on 127.0.0.1:53 of the worker's network namespace, the resolver glibc uses
    when /etc/resolv.conf is missing (as in the jail); it answers every query with 10.1.2.3 and
    records it. If the port is taken, whatever listens there is the loopback resolver."""
    queries: list[bytes] = []
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind(("127.0.0.1", 53))
    except OSError:
        srv.close()
        yield queries
        return
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                q, peer = srv.recvfrom(512)
            except OSError:
                continue
            queries.append(q)
            end = 12
            while end < len(q) and q[end]:
                end += q[end] + 1
            end += 5  # the name's terminator, QTYPE, QCLASS
            answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 1, 2, 3])
            with contextlib.suppress(OSError):
                srv.sendto(
                    q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:end] + answer, peer
                )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield queries
    finally:
        stop.set()
        t.join(2)
        srv.close()


def test_dns_resolution(run_design: RunDesign, loopback_resolver: list[bytes]) -> None:
    r = run_design(
        PRELUDE
        + """
import os, socket
def build():
    got = {"etc": sorted(os.listdir("/etc"))}
    for host in ("example.com", "pypi.org"):
        try:
            got[host] = [a[4][0] for a in socket.getaddrinfo(host, 443, socket.AF_INET)]
        except OSError as e:
            got[host] = type(e).__name__
    report(got)
"""
    )
    # No resolv.conf, hosts or nsswitch.conf in the jail, and the default resolver (the
    # worker's loopback) is in another network namespace.
    assert reported(r) == {
        "etc": ["ld.so.cache"],
        "example.com": "gaierror",
        "pypi.org": "gaierror",
    }
    assert loopback_resolver == []


def test_write_into_venv_site_packages_and_src(run_design: RunDesign) -> None:
    # A .pth file in site-packages would run code in every later interpreter, the worker's
    # included. The payload here is only a comment, in case the sandbox ever lets it through.
    name = f"simjail-pwned-{uuid.uuid4().hex[:8]}.pth"
    targets = [
        sys.prefix,  # the venv
        sysconfig.get_paths()["purelib"],  # its site-packages
        str(Path(worker.__file__).resolve().parent),  # simjail's own source
        str(Path(sys.base_prefix).resolve()),  # the base interpreter
        "/job",  # the job's own input
    ]
    try:
        r = run_design(
            PRELUDE
            + f"""
import os
def build():
    got = {{}}
    for d in {targets!r}:
        try:
            with open(os.path.join(d, {name!r}), "w") as f:
                f.write("# written from inside the build jail\\n")
            got[d] = "written"
        except OSError as e:
            got[d] = e.errno
    report(got)
"""
        )
        got = reported(r)
        assert set(got) == set(targets)
        for d, err in got.items():
            assert err == errno.EROFS, (d, err)  # the read-only bind, not just file modes
            assert not (Path(d) / name).exists()
    finally:
        for d in targets:
            (Path(d) / name).unlink(missing_ok=True)


def test_tmp_is_not_shared_with_the_next_job(run_design: RunDesign) -> None:
    token = f"left-for-the-next-job-{uuid.uuid4().hex[:8]}"
    lister = """
import os
def build():
    report({d: sorted(os.listdir(d)) for d in ("/tmp", "/dev/shm")})
"""
    first = run_design(
        PRELUDE
        + f"""
import os
def build():
    for d in ("/tmp", "/dev/shm"):
        with open(os.path.join(d, {token!r}), "w") as f:
            f.write("hello, next job")
    report({{d: sorted(os.listdir(d)) for d in ("/tmp", "/dev/shm")}})
"""
    )
    # A checkout or venv under the host's /tmp is bind-mounted on top of the jail's /tmp, so its
    # top directory shows there in every jail (read-only); nothing else may.
    binds = [Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parents[3] / "src"]
    under_tmp = sorted(
        {
            p.resolve().relative_to("/tmp").parts[0]
            for p in binds
            if p.resolve().is_relative_to("/tmp")
        }
    )
    assert reported(first) == {"/tmp": sorted([*under_tmp, token]), "/dev/shm": [token]}
    second = run_design(PRELUDE + lister)
    assert reported(second) == {"/tmp": under_tmp, "/dev/shm": []}


SYSCALLS = {
    "ptrace": 101,
    "mount": 165,
    "unshare": 272,
    "keyctl": 250,
    "bpf": 321,
    "perf_event_open": 298,
    "io_uring_setup": 425,
}


@pytest.mark.parametrize("syscall", list(SYSCALLS))
def test_forbidden_syscall_kills_the_jail(run_design: RunDesign, syscall: str) -> None:
    r = run_design(
        PRELUDE
        + f"""
import ctypes
def build():
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall({SYSCALLS[syscall]}, 0, 0, 0, 0, 0, 0)
    report({{"survived": {syscall!r}, "rc": rc, "errno": ctypes.get_errno()}})
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


def test_os_unshare_new_user_namespace(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
import os
def build():
    os.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS)
    report({"survived": "unshare"})
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


def test_ptrace_from_a_thread_kills_the_whole_jail(run_design: RunDesign) -> None:
    # KILL_PROCESS, not KILL_THREAD: hiding the call in a thread does not keep the rest alive.
    r = run_design(
        PRELUDE
        + """
import ctypes, threading
def build():
    t = threading.Thread(target=lambda: ctypes.CDLL(None).syscall(101, 16, 1, 0, 0))
    t.start()
    t.join()
    report({"survived": "ptrace in a thread"})
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


def test_ptrace_from_a_forked_child_is_blocked(run_design: RunDesign) -> None:
    # The forbidden call kills the forked process (SIGSYS) and cannot succeed. Only that process
    # dies, though: nsjail sees its own child (PID 1) exit normally, so the attempt is not
    # recorded as SANDBOX_VIOLATION. Denying fork/vfork/clone-without-CLONE_THREAD in the build
    # jail's seccomp policy would make it one (this test then has to expect SANDBOX_VIOLATION).
    r = run_design(
        PRELUDE
        + """
import ctypes, os
def build():
    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None).syscall(101, 16, 1, 0, 0)  # PTRACE_ATTACH to PID 1
        os._exit(42)
    _, status = os.waitpid(pid, 0)
    report({"child": os.waitstatus_to_exitcode(status)})
"""
    )
    assert reported(r) == {"child": -signal.SIGSYS}


def test_signal_the_parent_and_the_worker(run_design: RunDesign) -> None:
    worker_pid = os.getpid()
    r = run_design(
        PRELUDE
        + f"""
import os, signal
def build():
    got = {{"ppid": os.getppid(), "pid": os.getpid()}}
    for name, pid in (("ppid", os.getppid()), ("worker", {worker_pid}), ("init", 1)):
        try:
            os.kill(pid, signal.SIGKILL)
            got[name] = "sent"
        except OSError as e:
            got[name] = e.errno
    report(got)
"""
    )
    got = reported(r)
    # getppid() is 0 in a new pid namespace: kill(0) reaches only the jail's own group, and
    # PID 1 ignores SIGKILL from inside its namespace; the worker's pid does not exist there.
    assert got == {"ppid": "sent", "pid": 1, "worker": errno.ESRCH, "init": "sent"}
    os.kill(worker_pid, 0)  # the worker is alive


def test_kill_every_process_with_kill_minus_one(run_design: RunDesign) -> None:
    # A host process of the jail's own outside uid: without the pid namespace, kill(-1) from
    # the jail would reach it.
    sentinel = subprocess.Popen(["sleep", "60"], user=65534, group=65534)
    try:
        time.sleep(1.5)  # older than the job: the harness does not count it as the job's
        r = run_design(
            PRELUDE
            + """
import os, signal, time
def build():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    os.kill(-1, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    report({"init": "alive", "child": os.waitstatus_to_exitcode(status)})
"""
        )
        assert reported(r) == {"init": "alive", "child": -signal.SIGKILL}
        assert sentinel.poll() is None, "kill(-1) in the jail reached a host process"
    finally:
        sentinel.kill()
        sentinel.wait()


def test_setuid_root_and_chown_to_root(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
import os
def build():
    open("/tmp/mine", "w").close()
    got = {}
    for name, call in (
        ("setuid", lambda: os.setuid(0)),
        ("setgid", lambda: os.setgid(0)),
        ("setresuid", lambda: os.setresuid(0, 0, 0)),
        ("chown", lambda: os.chown("/tmp/mine", 0, 0)),
    ):
        try:
            call()
            got[name] = "ok"
        except OSError as e:
            got[name] = e.errno
    st = os.stat("/tmp/mine")
    got["ids"] = [os.getuid(), os.geteuid(), os.getgid(), st.st_uid, st.st_gid]
    report(got)
"""
    )
    # uid 0 is not mapped in the jail's user namespace: there is no root to become.
    assert reported(r) == {
        "setuid": errno.EINVAL,
        "setgid": errno.EINVAL,
        "setresuid": errno.EINVAL,
        "chown": errno.EINVAL,
        "ids": [65534] * 5,
    }

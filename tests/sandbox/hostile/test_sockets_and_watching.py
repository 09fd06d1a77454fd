"""Hostile designs that reach past the network namespace (socket families it does not cover),
watch the other jail's file opens, or call the kernel through another syscall ABI."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

SECCOMP_KILLED = "The design build step made a forbidden system call and was killed."
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


# Families the network namespace does not cover: each reaches the kernel or the host directly.
FAMILIES = {
    "AF_VSOCK": 40,  # the hypervisor's host (Firecracker listens on vsock)
    "AF_NETLINK": 16,
    "AF_PACKET": 17,
    "AF_BLUETOOTH": 31,
    "AF_ALG": 38,
    "AF_XDP": 44,
    "AF_KEY": 15,
    "AF_TIPC": 30,
    "AF_CAN": 29,
    "AF_RDS": 21,
    "AF_QIPCRTR": 42,
    "AF_MCTP": 45,
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_socket_of_a_family_outside_the_network_namespace_kills_the_jail(
    run_design: RunDesign, family: str
) -> None:
    r = run_design(
        PRELUDE
        + f"""
import socket
def build():
    try:
        s = socket.socket({FAMILIES[family]}, socket.SOCK_DGRAM)
        report({{"created": {family!r}}})
    except OSError as e:
        report({{"refused": e.errno}})
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


def test_socketpair_of_another_family_than_unix_kills_the_jail(run_design: RunDesign) -> None:
    r = run_design(
        PRELUDE
        + """
import socket
def build():
    try:
        socket.socketpair(40, socket.SOCK_STREAM)
        report({"created": "vsock pair"})
    except OSError as e:
        report({"refused": e.errno})
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason


def test_honest_twin_unix_pairs_and_inet_sockets_still_work(run_design: RunDesign) -> None:
    """What real code uses (multiprocessing's and asyncio's socket pairs, a socket object that
    never reaches anything) is not a violation: the network namespace answers the rest."""
    r = run_design(
        PRELUDE
        + """
import socket
def build():
    a, b = socket.socketpair()
    a.sendall(b"ping")
    got = {"pair": b.recv(4).decode()}
    for name, fam in (("inet", socket.AF_INET), ("inet6", socket.AF_INET6)):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.connect(("1.1.1.1", 53) if fam == socket.AF_INET else ("::1", 53))
            got[name] = "connected"
        except OSError as e:
            got[name] = e.errno
        s.close()
    report(got)
"""
    )
    import errno

    assert reported(r) == {"pair": "ping", "inet": errno.ENETUNREACH, "inet6": errno.EADDRNOTAVAIL}


@pytest.mark.parametrize("call", ["inotify_init1", "fanotify_init"])
def test_watching_files_kills_the_jail(run_design: RunDesign, call: str) -> None:
    r = run_design(
        PRELUDE
        + f"""
import ctypes
def build():
    fd = ctypes.CDLL(None, use_errno=True).{call}(0, 0)
    report({{"fd": fd, "errno": ctypes.get_errno()}})
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


ENVIRONMENT = """
from build123d import Box, Pos
import time
PARTS = {"table": {"fixed": True}}
def build():
    time.sleep(1.0)  # still building while the design tries to watch it
    table = Pos(0, 0, 5) * Box(200, 200, 10)
    table.label = "table"
    return table
"""


def test_watching_the_environment_jail_while_both_build_kills_the_design(
    run_design: RunDesign,
) -> None:
    """Both build jails run at once and share the read-only binds: the design's inotify watch
    on the venv (which the environment's jail reads as it imports) is refused at once."""
    import sys

    r = run_design(
        PRELUDE
        + f"""
import ctypes, os
def build():
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    wd = libc.inotify_add_watch(fd, {sys.prefix!r}.encode(), 0x20)  # IN_OPEN
    events = os.read(fd, 4096) if fd >= 0 and wd >= 0 else b""
    report({{"fd": fd, "wd": wd, "events": len(events)}})
""",
        environment={"code": textwrap.dedent(ENVIRONMENT)},
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


def test_honest_twin_design_and_environment_build_together(run_design: RunDesign) -> None:
    r = run_design(
        """
from build123d import Box, Pos
def build():
    cube = Pos(0, 0, 30) * Box(10, 10, 10)
    cube.label = "cube"
    return cube
""",
        environment={"code": textwrap.dedent(ENVIRONMENT)},
    )
    assert r.outcome == "SUCCESS", r.reason
    assert set(r.metrics["parts"]) == {"cube", "table"}


SYSCALL32 = """
import ctypes, mmap
def syscall32(nr, a=0, b=0, c=0):
    # mov eax, nr; mov ebx, a; mov ecx, b; mov edx, c; int 0x80; ret
    code = (b"\\xb8" + nr.to_bytes(4, "little") + b"\\xbb" + a.to_bytes(4, "little")
            + b"\\xb9" + b.to_bytes(4, "little") + b"\\xba" + c.to_bytes(4, "little")
            + b"\\xcd\\x80\\xc3")
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    return ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()
"""


def test_32_bit_syscall_abi_cannot_bypass_the_filter(run_design: RunDesign) -> None:
    """`int 0x80` numbers syscalls the i386 way (26 = ptrace there, msync on x86_64): the filter
    checks the architecture first and kills any call that is not native x86_64."""
    r = run_design(
        PRELUDE
        + SYSCALL32
        + """
def build():
    report({"unshare": syscall32(310, 0x10000000)})  # i386 unshare(CLONE_NEWUSER)
"""
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION, r.reason
    assert r.reason == SECCOMP_KILLED


def test_x32_syscall_abi_is_not_available(run_design: RunDesign) -> None:
    """x32 calls carry the native architecture with bit 30 set in the number, which a
    name-based filter does not see. This kernel has no x32 ABI (ENOSYS); `simjail policy check`
    refuses a machine where it has one."""
    r = run_design(
        PRELUDE
        + """
import ctypes
def build():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(0x40000000 | 272), ctypes.c_long(0x10000000))  # unshare
    report({"rc": rc, "errno": ctypes.get_errno()})
"""
    )
    import errno

    assert reported(r) == {"rc": -1, "errno": errno.ENOSYS}

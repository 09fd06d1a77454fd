"""The job filter compiled from seccomp/jail.kafel: what it answers for each call, run through a
small BPF interpreter here (the kernel runs the same program in every warm build job; that it
kills there is `simjail policy check`'s and tests/sandbox/hostile's business), and the zygote's
own file, which may differ from jail.kafel in three allowed rules and nowhere else."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from worker.sandbox import seccomp
from worker.sandbox.policy import PolicyError, default_root
from worker.sandbox.seccomp import (
    AUDIT_ARCH_X86_64,
    RET_ALLOW,
    RET_ERRNO,
    RET_KILL_PROCESS,
    SYSCALLS_X86_64,
    compile_policy,
    parse,
    zygote_differences,
)

ROOT = default_root()
JAIL = (ROOT / "seccomp" / "jail.kafel").read_text()
ZYGOTE = (ROOT / "seccomp" / "zygote.kafel").read_text()
AUDIT_ARCH_I386 = 0x40000003
CLONE_NEW = {
    "NEWNS": 0x00020000,
    "NEWCGROUP": 0x02000000,
    "NEWUTS": 0x04000000,
    "NEWIPC": 0x08000000,
    "NEWUSER": 0x10000000,
    "NEWPID": 0x20000000,
    "NEWNET": 0x40000000,
}
SIGCHLD, CLONE_VM, CLONE_THREAD = 17, 0x100, 0x10000


def run(program: bytes, nr: int, *args: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    """What `program` answers for a call (struct seccomp_data as the kernel builds it)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    for _ in range(10_000):
        code, jt, jf, k = insns[pc]
        if code == seccomp.LD_W_ABS:
            acc, pc = struct.unpack_from("<I", data, k)[0], pc + 1
        elif code == seccomp.ALU_AND_K:
            acc, pc = acc & k, pc + 1
        elif code == seccomp.JMP_JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == seccomp.JMP_JGE_K:
            pc += 1 + (jt if acc >= k else jf)
        elif code == seccomp.JMP_JSET_K:
            pc += 1 + (jt if acc & k else jf)
        elif code == seccomp.RET_K:
            return k
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
    raise AssertionError("the program loops")


@pytest.fixture(scope="module")
def jail() -> bytes:
    return compile_policy(JAIL)


def test_every_unconditional_rule_of_jail_kafel_kills_its_call(jail: bytes) -> None:
    rules, _ = parse(JAIL)
    unconditional = [r.syscall for r in rules if r.condition is None and r.syscall != "clone3"]
    assert {"ptrace", "mount", "umount", "unshare", "setns", "bpf", "io_uring_setup"} <= set(
        unconditional
    )
    for name in unconditional:
        assert run(jail, SYSCALLS_X86_64[name]) == RET_KILL_PROCESS, name


def test_clone3_answers_enosys_and_ordinary_calls_pass(jail: bytes) -> None:
    assert run(jail, SYSCALLS_X86_64["clone3"]) == RET_ERRNO | 38
    for nr in (0, 1, 39, 57, 59, 60, 231):  # read, write, getpid, fork, execve, exit(_group)
        assert run(jail, nr) == RET_ALLOW


def test_clone_is_killed_with_any_namespace_flag_and_allowed_without(jail: bytes) -> None:
    clone = SYSCALLS_X86_64["clone"]
    assert run(jail, clone, SIGCHLD) == RET_ALLOW  # fork
    assert run(jail, clone, CLONE_VM | CLONE_THREAD | 0x3D0F00) == RET_ALLOW  # a thread
    assert run(jail, clone, SIGCHLD | (1 << 40)) == RET_ALLOW  # high bits: no namespace flag
    for name, flag in CLONE_NEW.items():
        assert run(jail, clone, SIGCHLD | flag) == RET_KILL_PROCESS, name


def test_sockets_of_other_families_are_killed(jail: bytes) -> None:
    socket_, pair = SYSCALLS_X86_64["socket"], SYSCALLS_X86_64["socketpair"]
    for family in (1, 2, 10):
        assert run(jail, socket_, family, 1) == RET_ALLOW
    for family in (0, 16, 17, 38, 40, 44):  # netlink, packet, alg, vsock, xdp
        assert run(jail, socket_, family, 1) == RET_KILL_PROCESS, family
    # The kernel reads an int: bits above the low word do not make AF_VSOCK an AF_UNIX.
    assert run(jail, socket_, (1 << 32) | 40) == RET_KILL_PROCESS
    assert run(jail, pair, 1) == RET_ALLOW
    assert run(jail, pair, 2) == RET_KILL_PROCESS


def test_the_architecture_is_checked_first_and_x32_gets_enosys(jail: bytes) -> None:
    # i386's number 26 is ptrace; 39 (getpid on x86_64) is umount there: any other ABI is killed.
    assert run(jail, 39, arch=AUDIT_ARCH_I386) == RET_KILL_PROCESS
    assert run(jail, 0x40000000 | 101) == RET_ERRNO | 38  # x32 ptrace
    assert run(jail, 0x40000000 | 39) == RET_ERRNO | 38


def test_the_zygote_filter_allows_only_its_three_loosened_calls() -> None:
    zygote = compile_policy(ZYGOTE)
    unshare = SYSCALLS_X86_64["unshare"]
    assert run(zygote, SYSCALLS_X86_64["mount"]) == RET_ALLOW
    assert run(zygote, SYSCALLS_X86_64["umount"]) == RET_ALLOW
    assert run(zygote, unshare, CLONE_NEW["NEWNS"] | CLONE_NEW["NEWPID"]) == RET_ALLOW
    assert run(zygote, unshare, CLONE_NEW["NEWUSER"]) == RET_KILL_PROCESS
    assert run(zygote, unshare, CLONE_NEW["NEWUSER"] | CLONE_NEW["NEWNS"]) == RET_KILL_PROCESS
    assert run(zygote, SYSCALLS_X86_64["clone"], SIGCHLD | CLONE_NEW["NEWNS"]) == RET_KILL_PROCESS
    for name in ("ptrace", "setns", "pivot_root", "bpf", "open_tree", "move_mount"):
        assert run(zygote, SYSCALLS_X86_64[name]) == RET_KILL_PROCESS, name
    assert zygote_differences(JAIL, ZYGOTE) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("    ptrace,\n", ""), "ptrace is allowed in the zygote but killed in a jail"),
        (("    setns,\n", ""), "setns is allowed in the zygote but killed in a jail"),
        (("0x10000000) != 0 },", "0x10000001) != 0 },"), "unshare is not killed for"),
        (("    pivot_root,\n", "    pivot_root,\n    mount,\n"), "mount has a rule"),
        (("family != 10 }", "family != 10 && family != 16 }"), "socket is answered differently"),
    ],
)
def test_any_other_difference_of_the_zygote_filter_is_reported(
    change: tuple[str, str], problem: str
) -> None:
    assert change[0] in ZYGOTE
    found = zygote_differences(JAIL, ZYGOTE.replace(*change))
    assert any(p.startswith(problem) for p in found), found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("POLICY p { KILL { fstat } } USE p DEFAULT ALLOW", "unknown syscall 'fstat'"),
        ("POLICY p { KILL { socket { family < 3 } } } USE p DEFAULT ALLOW", "supports == and !="),
        ("POLICY p { KILL { ptrace }, ALLOW { ptrace } } USE p DEFAULT ALLOW", "more than one"),
        ("POLICY p { TRAP(1) { ptrace } } USE p DEFAULT ALLOW", "does not support the action"),
        ("POLICY p { KILL { ptrace } } USE q DEFAULT ALLOW", "USE names a policy other"),
        ("POLICY p { KILL { ptrace } } USE p DEFAULT ALLOW extra", "unexpected 'extra'"),
        ("POLICY p { KILL { clone { flags == 1 } } } USE p DEFAULT ALLOW", "no argument 'flags'"),
        ("#define X 1\nPOLICY p { KILL { ptrace } } USE p DEFAULT ALLOW", "does not understand"),
    ],
)
def test_what_the_compiler_cannot_express_is_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        compile_policy(text)


def test_conditions_with_or_and_masks_compile_as_written() -> None:
    text = """
    POLICY p {
      ERRNO(1) { socket { family == 2 || (type & 0x800) == 0x800 } },
      KILL_PROCESS { unshare { unshare_flags != 0 && (unshare_flags & 0x100) == 0 } }
    }
    USE p DEFAULT ALLOW
    """
    prog = compile_policy(text)
    sock, unshare = SYSCALLS_X86_64["socket"], SYSCALLS_X86_64["unshare"]
    assert run(prog, sock, 2, 1) == RET_ERRNO | 1
    assert run(prog, sock, 1, 0x801) == RET_ERRNO | 1
    assert run(prog, sock, 1, 1) == RET_ALLOW
    assert run(prog, unshare, 0) == RET_ALLOW
    assert run(prog, unshare, 0x200) == RET_KILL_PROCESS
    assert run(prog, unshare, 0x300) == RET_ALLOW
    assert run(prog, unshare, 1 << 33) == RET_KILL_PROCESS  # an 8-byte argument: both words


def test_the_policy_files_parse_and_name_only_known_calls() -> None:
    for f in sorted((ROOT / "seccomp").glob("*.kafel")):
        rules, default = parse(Path(f).read_text())
        assert rules and default == RET_ALLOW

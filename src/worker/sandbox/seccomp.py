"""A seccomp filter compiled from a kafel policy file, for a process nsjail did not start.

A warm build job is forked from the zygote (`worker.sandbox.zygote_child`), whose own filter
(`seccomp/zygote.kafel`, installed by nsjail) lets it unshare and mount. Before any design code
runs, the job installs a filter of its own: `seccomp/jail.kafel` itself, the file every cold
jail loads, compiled here into classic BPF. Filters stack and the strictest answer wins, so a
warm job is held to jail.kafel exactly, whatever the zygote's file allows.

This is not kafel: it understands the part of kafel's language that simjail's policies use and
refuses the rest (PolicyError), so a policy it cannot express never compiles into something
weaker. One POLICY of action blocks (KILL_PROCESS, KILL, ERRNO(n), ALLOW) whose rules are syscall
names, each optionally with a condition on its arguments: comparisons `==` / `!=` of an argument,
or of `(argument & mask)`, with a number, joined by `&&` and `||`, in parentheses; then
`USE <policy> DEFAULT <action>`. Like nsjail's filters, the program first checks the
architecture (x86_64, else kill); every call through the x32 ABI (bit 30 of the number), which a
filter of x86_64 numbers would otherwise let through, gets ENOSYS: what these kernels, built
without x32, answer anyway (and what a cold jail sees), now also where a kernel has it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from worker.sandbox.policy import PolicyError

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
ENOSYS = 38
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
NR_OFFSET, ARCH_OFFSET, ARGS_OFFSET = 0, 4, 16

# Classic BPF opcodes.
LD_W_ABS = 0x20
JMP_JEQ_K = 0x15
JMP_JGE_K = 0x35
JMP_JSET_K = 0x45
ALU_AND_K = 0x54
RET_K = 0x06

SYSCALLS_X86_64: dict[str, int] = {
    # x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl) of every call simjail's policies
    # name, under kafel's names (kafel calls umount2 `umount`). An unknown name is an error.
    "acct": 163, "add_key": 248, "adjtimex": 159, "bpf": 321, "chroot": 161,
    "clock_adjtime": 305, "clock_settime": 227, "clone": 56, "clone3": 435,
    "delete_module": 176, "fanotify_init": 300, "fanotify_mark": 301, "finit_module": 313,
    "fsconfig": 431, "fsmount": 432, "fsopen": 430, "fspick": 433, "init_module": 175,
    "inotify_add_watch": 254, "inotify_init": 253, "inotify_init1": 294,
    "io_uring_enter": 426, "io_uring_register": 427, "io_uring_setup": 425,
    "kexec_file_load": 320, "kexec_load": 246, "keyctl": 250, "lookup_dcookie": 212,
    "mount": 165, "mount_setattr": 442, "move_mount": 429, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "open_tree": 428, "perf_event_open": 298, "personality": 135,
    "pivot_root": 155, "process_vm_readv": 310, "process_vm_writev": 311, "ptrace": 101,
    "quotactl": 179, "reboot": 169, "request_key": 249, "setns": 308, "settimeofday": 164,
    "socket": 41, "socketpair": 53, "swapoff": 168, "swapon": 167, "syslog": 103,
    "umount": 166, "unshare": 272, "uselib": 134, "userfaultfd": 323, "vhangup": 153,
}  # fmt: skip
ARGUMENTS: dict[str, dict[str, tuple[int, int]]] = {
    # Argument names (as kafel spells them) → (index, size in bytes) of the calls whose rules
    # may carry a condition. A 4-byte argument is compared on its low word only: the kernel
    # reads an int there and ignores the rest.
    "clone": {"clone_flags": (0, 8), "newsp": (1, 8)},
    "unshare": {"unshare_flags": (0, 8)},
    "socket": {"family": (0, 4), "type": (1, 4), "protocol": (2, 4)},
    "socketpair": {"family": (0, 4), "type": (1, 4), "protocol": (2, 4)},
}


@dataclass(frozen=True)
class Rule:
    syscall: str
    action: int
    condition: object | None
    """None (always), or a parsed expression: ("or"|"and", [..]), ("cmp", arg, mask, op, k)."""


_TOKEN = re.compile(
    r"\s*(0x[0-9a-fA-F]+|\d+|[A-Za-z_][A-Za-z_0-9]*|&&|\|\||==|!=|<=|>=|[<>{}(),&])"
)


def _tokens(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PolicyError(
                f"the job filter compiler does not understand {text[pos : pos + 30]!r}"
            )
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> str:
        return self.t[self.i] if self.i < len(self.t) else ""

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if not tok or (want is not None and tok != want):
            raise PolicyError(f"kafel: expected {want or 'more'}, found {tok or 'the end'!r}")
        self.i += 1
        return tok

    def action(self) -> int:
        name = self.take()
        if name == "KILL_PROCESS":
            return RET_KILL_PROCESS
        if name == "KILL":
            return RET_KILL_THREAD
        if name == "ALLOW":
            return RET_ALLOW
        if name == "ERRNO":
            self.take("(")
            n = self.number()
            self.take(")")
            if not 0 <= n < 4096:
                raise PolicyError(f"kafel: ERRNO({n}) is not an errno")
            return RET_ERRNO | n
        raise PolicyError(f"kafel: the job filter compiler does not support the action {name}")

    def number(self) -> int:
        tok = self.take()
        if not re.fullmatch(r"0x[0-9a-fA-F]+|\d+", tok):
            raise PolicyError(f"kafel: expected a number, found {tok!r}")
        value = int(tok, 0)
        if value >= 2**64:
            raise PolicyError(f"kafel: {tok} does not fit in 64 bits")
        return value

    def policy(self) -> tuple[list[Rule], int]:
        self.take("POLICY")
        name = self.take()
        self.take("{")
        rules: list[Rule] = []
        while True:
            action = self.action()
            self.take("{")
            while True:
                rules.append(self.rule(action))
                if self.peek() == ",":
                    self.take(",")
                    continue
                break
            self.take("}")
            if self.peek() == ",":
                self.take(",")
                continue
            break
        self.take("}")
        self.take("USE")
        if self.take() != name:
            raise PolicyError(f"kafel: USE names a policy other than {name}")
        self.take("DEFAULT")
        default = self.action()
        if self.peek():
            raise PolicyError(f"kafel: unexpected {self.peek()!r} after the policy")
        seen: set[str] = set()
        for r in rules:
            if r.syscall in seen:  # kafel's precedence between rules of one call: not ours
                raise PolicyError(f"kafel: {r.syscall} appears in more than one rule")
            seen.add(r.syscall)
        return rules, default

    def rule(self, action: int) -> Rule:
        name = self.take()
        if name not in SYSCALLS_X86_64:
            raise PolicyError(f"kafel: unknown syscall {name!r} (x86_64 names)")
        condition = None
        if self.peek() == "{":
            self.take("{")
            condition = self.disjunction(name)
            self.take("}")
        return Rule(name, action, condition)

    def disjunction(self, call: str) -> object:
        terms = [self.conjunction(call)]
        while self.peek() == "||":
            self.take("||")
            terms.append(self.conjunction(call))
        return terms[0] if len(terms) == 1 else ("or", terms)

    def conjunction(self, call: str) -> object:
        terms = [self.comparison(call)]
        while self.peek() == "&&":
            self.take("&&")
            terms.append(self.comparison(call))
        return terms[0] if len(terms) == 1 else ("and", terms)

    def comparison(self, call: str) -> object:
        mask = None
        if self.peek() == "(":
            self.take("(")
            if self.t[self.i + 1 : self.i + 2] == ["&"]:  # (argument & mask)
                arg = self.argument(call)
                self.take("&")
                mask = self.number()
                self.take(")")
            else:
                inner = self.disjunction(call)
                self.take(")")
                return inner
        else:
            arg = self.argument(call)
        op = self.take()
        if op not in ("==", "!="):
            raise PolicyError(f"kafel: the job filter compiler supports == and !=, not {op!r}")
        return ("cmp", arg, mask, op, self.number())

    def argument(self, call: str) -> tuple[int, int]:
        name = self.take()
        args = ARGUMENTS.get(call, {})
        if name not in args:
            raise PolicyError(f"kafel: {call} has no argument {name!r} the compiler knows")
        return args[name]


def parse(text: str) -> tuple[list[Rule], int]:
    """The rules and the default action of a kafel policy file (PolicyError if it is not in
    the supported subset)."""
    return _Parser(_tokens(text)).policy()


class _Asm:
    """Classic BPF with forward labels (jump offsets are resolved once the block is done)."""

    def __init__(self) -> None:
        self.code: list[list[int | str]] = []
        self.labels: dict[str, int] = {}
        self.n = 0

    def label(self) -> str:
        self.n += 1
        return f"L{self.n}"

    def here(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def emit(self, op: int, jt: int | str = 0, jf: int | str = 0, k: int = 0) -> None:
        self.code.append([op, jt, jf, k])

    def assemble(self) -> bytes:
        out = b""
        for i, (op, jt, jf, k) in enumerate(self.code):
            offs = []
            for target in (jt, jf):
                if isinstance(target, str):
                    target = self.labels[target] - i - 1
                if not 0 <= target <= 255:
                    raise PolicyError("the job filter is too large for a BPF jump")
                offs.append(target)
            out += struct.pack("<HBBI", op, offs[0], offs[1], int(k) & 0xFFFFFFFF)
        return out


def _cond(asm: _Asm, expr: object, true: str, false: str) -> None:
    """Emit code that jumps to `true` when `expr` holds for the call's arguments, else `false`."""
    assert isinstance(expr, tuple)
    if expr[0] in ("and", "or"):
        terms = expr[1]
        for term in terms[:-1]:
            nxt = asm.label()
            if expr[0] == "and":
                _cond(asm, term, nxt, false)
            else:
                _cond(asm, term, true, nxt)
            asm.here(nxt)
        _cond(asm, terms[-1], true, false)
        return
    _, (index, size), mask, op, k = expr
    words = [(ARGS_OFFSET + 8 * index, 0xFFFFFFFF)]
    if size == 8:
        words.append((ARGS_OFFSET + 8 * index + 4, 0xFFFFFFFF << 32))
    # Equal when every word is equal (masked where a mask is given).
    equal, differ = (true, false) if op == "==" else (false, true)
    for n, (offset, span) in enumerate(words):
        part_mask = (((mask if mask is not None else 2**64 - 1) & span) >> (32 * n)) & 0xFFFFFFFF
        part_k = ((k & span) >> (32 * n)) & 0xFFFFFFFF
        last = n == len(words) - 1
        nxt = asm.label()
        asm.emit(LD_W_ABS, k=offset)
        if part_mask == 0xFFFFFFFF:
            asm.emit(JMP_JEQ_K, equal if last else nxt, differ, part_k)
        elif part_k == 0:  # (a & m) == 0: JSET jumps when any masked bit is set
            asm.emit(JMP_JSET_K, differ, equal if last else nxt, part_mask)
        else:
            asm.emit(ALU_AND_K, k=part_mask)
            asm.emit(JMP_JEQ_K, equal if last else nxt, differ, part_k)
        asm.here(nxt)


def compile_policy(text: str) -> bytes:
    """The BPF program (struct sock_filter[]) for a kafel policy: the architecture checked first,
    the x32 ABI refused (ENOSYS), then one block per rule."""
    rules, default = parse(text)
    asm = _Asm()
    asm.emit(LD_W_ABS, k=ARCH_OFFSET)
    asm.emit(JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64)
    asm.emit(RET_K, k=RET_KILL_PROCESS)
    asm.emit(LD_W_ABS, k=NR_OFFSET)
    asm.emit(JMP_JGE_K, 0, 1, X32_SYSCALL_BIT)
    asm.emit(RET_K, k=RET_ERRNO | ENOSYS)
    for r in rules:
        nxt = asm.label()
        asm.emit(JMP_JEQ_K, 0, nxt, SYSCALLS_X86_64[r.syscall])
        if r.condition is None:
            asm.emit(RET_K, k=r.action)
        else:
            act, dflt = asm.label(), asm.label()
            _cond(asm, r.condition, act, dflt)
            asm.here(act)
            asm.emit(RET_K, k=r.action)
            asm.here(dflt)
            asm.emit(RET_K, k=default)  # one rule per call: nothing else can apply to it
        # The accumulator still holds the number on the way to the next rule: a conditional
        # block leaves only through its returns.
        asm.here(nxt)
    asm.emit(RET_K, k=default)
    return asm.assemble()


ZYGOTE_LOOSENED = {
    # What seccomp/zygote.kafel may allow that seccomp/jail.kafel kills, and nothing else: the
    # zygote's children mount their own /proc, /tmp, /dev/shm and /job and unshare every
    # namespace but the user namespace. Each job installs jail.kafel on top before its first line.
    "mount": None,
    "umount": None,
    "unshare": ("cmp", (0, 8), 0x10000000, "!=", 0),
}
"""syscall → the zygote's rule for it (None: no rule, the call is allowed)."""


def zygote_differences(jail_text: str, zygote_text: str) -> list[str]:
    """How the zygote's filter differs from the jail's beyond ZYGOTE_LOOSENED (empty: only
    there, exactly as allowed)."""
    jail, jail_default = parse(jail_text)
    zygote, zygote_default = parse(zygote_text)
    want = {r.syscall: r for r in jail}
    got = {r.syscall: r for r in zygote}
    problems = []
    if jail_default != zygote_default:
        problems.append("the default action differs")
    for name in sorted(set(want) | set(got)):
        if name in ZYGOTE_LOOSENED:
            allowed = ZYGOTE_LOOSENED[name]
            rule = got.get(name)
            if allowed is None and rule is not None:
                problems.append(f"{name} has a rule, which the zygote's jobs need not to have")
            if allowed is not None and (
                rule is None or rule.condition != allowed or rule.action != RET_KILL_PROCESS
            ):
                problems.append(f"{name} is not killed for {allowed}")
            continue
        if name not in got:
            problems.append(f"{name} is allowed in the zygote but killed in a jail")
        elif name not in want:
            problems.append(f"{name} is a zygote rule a jail does not have")
        elif (got[name].action, got[name].condition) != (want[name].action, want[name].condition):
            problems.append(f"{name} is answered differently in the zygote")
    return problems

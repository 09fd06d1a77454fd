"""`simjail policy check` from the inside: every promise of a policy file holds in a real jail
of each kind, and editing a line so that it no longer holds (or nsjail ignores it) fails the
check loudly, naming what differs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.sandbox.nsjail import NsjailLauncher
from worker.sandbox.policy import JAILS, Policy, default_root
from worker.sandbox.probe import Check, verify

pytestmark = pytest.mark.slow


@pytest.fixture
def copy(jail_tmp: Callable[[str], Path]) -> Policy:
    root = jail_tmp("policy")
    for d in ("sandbox", "seccomp"):
        shutil.copytree(default_root() / d, root / d)
    return Policy(root)


def failed(checks: list[Check]) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in checks if not c.ok]


@pytest.mark.parametrize("jail", JAILS)
def test_every_promise_of_the_real_policy_holds(jail: str) -> None:
    checks = verify(NsjailLauncher(Policy(default_root())), jail)
    assert failed(checks) == []
    names = {c.name for c in checks}
    # What the issue asks the check to prove, each by name.
    for needle in (
        "uid map",
        "gid map",
        "capabilities CapEff",
        "no_new_privs",
        "seccomp mode",
        "seccomp kills socket(AF_VSOCK)",
        "network interfaces up",
        "writable mounts",
        "rlimit Max stack size",
        "rlimit Max open files",
        "cgroup cgroup_mem_max",
        "cgroup cgroup_pids_max",
        "cgroup cgroup_cpu_ms_per_sec",
    ):
        assert any(needle in n for n in names), needle


def test_a_stack_limit_nsjail_ignores_fails_the_check(copy: Policy) -> None:
    """`rlimit_stack: 64` without `rlimit_stack_type: VALUE`: nsjail keeps the inherited 8 MiB,
    which neither `policy show` nor the old check noticed."""
    cfg = copy.config("build")
    cfg.write_text(cfg.read_text().replace("rlimit_stack_type: VALUE", "# (removed)"))
    assert failed(verify(NsjailLauncher(copy), "build")) == [
        "rlimit Max stack size (soft, hard): expected (67108864, 67108864), the jail has "
        "(8388608, 8388608)"
    ]


def test_a_uid_map_to_host_root_fails_the_check(copy: Policy) -> None:
    """Mapped to host root (nsjail's default when run as root) the jail could read /etc/shadow
    and ignore process limits (DESIGN.md §8): whatever the file says, the outside uid must be
    the unprivileged 65534."""
    cfg = copy.config("build")
    text = cfg.read_text()
    old = 'uidmap { inside_id: "65534" outside_id: "65534" count: 1 }'
    assert old in text
    cfg.write_text(text.replace(old, 'uidmap { inside_id: "65534" outside_id: "0" count: 1 }'))
    assert failed(verify(NsjailLauncher(copy), "build")) == [
        "uid map (inside outside count): expected '65534 65534 1', the jail has '65534 0 1'"
    ]


def test_a_socket_rule_removed_from_seccomp_fails_the_check(copy: Policy) -> None:
    kafel = copy.root / "seccomp" / "jail.kafel"
    text = kafel.read_text()
    rule = "    socket { family != 1 && family != 2 && family != 10 },\n"
    assert rule in text
    kafel.write_text(text.replace(rule, ""))
    problems = failed(verify(NsjailLauncher(copy), "build"))
    assert problems == [
        "seccomp kills socket(AF_VSOCK): expected -31, the jail has 0",
        "seccomp kills socket(AF_NETLINK): expected -31, the jail has 0",
    ]


def test_simjail_policy_check_exits_3_naming_what_does_not_hold(copy: Policy) -> None:
    cfg = copy.config("physics")
    cfg.write_text(cfg.read_text().replace("rlimit_stack_type: VALUE", "# (removed)"))
    env = {**os.environ, "SIMJAIL_POLICY_DIR": str(copy.root)}
    r = subprocess.run(
        [sys.executable, "-m", "worker.cli", "policy", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    assert "FAIL physics: rlimit Max stack size (soft, hard): expected" in r.stdout
    assert "ok   build: rlimit Max stack size (soft, hard)" in r.stdout
    assert "1 promise(s) of the sandbox policy do not hold here" in r.stderr


def test_simjail_policy_check_passes_on_the_real_policy() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "worker.cli", "policy", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every policy line checked holds in a real jail of each kind" in r.stdout

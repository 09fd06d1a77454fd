"""Warm build jobs, forked from a zygote in real jails: each has every isolation property of a
cold build jail (compared field by field, from inside both), the zygote's policy differs from
build.cfg only where it says so, and a broken, worn-out or orphaned zygote never leaves a job
without a jail or a process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import structlog

from worker.sandbox import cgroups
from worker.sandbox.nsjail import NsjailLauncher, remove_stale_cgroups
from worker.sandbox.policy import Policy, bind_lines, default_root, jail_settings
from worker.sandbox.probe import Probed, run_probe, verify_warm
from worker.sandbox.zygote import Recycling, WarmLauncher

pytestmark = pytest.mark.slow

REAL = Policy(default_root())


def _wait_for(what: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.05)
    return what()


@pytest.fixture
def warm() -> Iterator[WarmLauncher]:
    launcher = WarmLauncher(NsjailLauncher(REAL))
    try:
        yield launcher
    finally:
        launcher.close()


# --- the zygote's policy file ----------------------------------------------------------------


def test_the_zygote_binds_and_environment_are_build_cfgs_line_for_line() -> None:
    build = [ln for ln in bind_lines(REAL, "build") if '"/job"' not in ln]
    assert bind_lines(REAL, "zygote") == build
    assert jail_settings(REAL, "zygote").envars == jail_settings(REAL, "build").envars


def test_no_rlimit_of_the_zygote_is_below_build_cfgs() -> None:
    """A job can lower a limit, never raise it: each of the zygote's must be at least the
    build jail's (None: unlimited)."""
    zygote, build = jail_settings(REAL, "zygote").rlimits, jail_settings(REAL, "build").rlimits
    assert set(zygote) == set(build)
    for name, value in build.items():
        assert zygote[name] is None or (value is not None and zygote[name] >= value), name


def test_only_the_zygote_keeps_capabilities_and_each_line_says_why() -> None:
    text = REAL.config("zygote").read_text()
    assert re.search(r"^keep_caps: true\s+# ZYGOTE ONLY", text, re.M)
    assert re.search(r"^keep_caps: false", REAL.config("build").read_text(), re.M)
    assert re.search(r'^seccomp_policy_file: "seccomp/zygote.kafel"', text, re.M)


# --- a warm job against a cold build jail ------------------------------------------------------


def _same(cold: Probed, warm: Probed) -> dict[str, tuple[object, object]]:
    """Every property the probe saw that differs between the two jails."""
    c, w = cold.report, warm.report
    pairs: dict[str, tuple[object, object]] = {
        "identity": ((c.uid, c.gid, c.pid, c.hostname), (w.uid, w.gid, w.pid, w.hostname)),
        "maps": ((c.uid_map, c.gid_map), (w.uid_map, w.gid_map)),
        "environment": (c.env_keys, w.env_keys),
        "limits": (c.limits, w.limits),
        "capabilities and no_new_privs": (
            {k: v for k, v in c.status.items() if k != "Seccomp_filters"},
            {k: v for k, v in w.status.items() if k != "Seccomp_filters"},
        ),
        "interfaces": (c.interfaces, w.interfaces),
        "mounts (point, read-only)": (sorted(set(c.mounts)), sorted(set(w.mounts))),
        # A warm job's /job is a read-only tmpfs with a copy of the job's files, a cold jail's a
        # read-only bind of the host directory (both read-only: "mounts" above).
        "tmpfs sizes": (c.tmpfs_bytes, {k: v for k, v in w.tmpfs_bytes.items() if k != "/job"}),
        "forbidden calls": (c.denied, w.denied),
        "x32 and clone3": ((c.x32_errno, c.clone3_errno), (w.x32_errno, w.clone3_errno)),
        "descriptors": (
            [fd for fd in c.fds if fd != c.frame_fd] + ["frames"],
            [fd for fd in w.fds if fd != w.frame_fd] + ["frames"],
        ),
        "cgroup limits": (cold.cgroups, warm.cgroups),
    }
    return {k: v for k, v in pairs.items() if v[0] != v[1]}


def test_a_warm_job_has_every_isolation_property_of_a_cold_build_jail(
    warm: WarmLauncher,
) -> None:
    cold = run_probe(warm.cold, "build")
    forked = run_probe(warm, "build")
    assert warm.counts == {"warm": 1, "cold": 0, "zygotes": 1}
    assert _same(cold, forked) == {}
    assert cold.report.status["Seccomp_filters"] == "1"
    assert forked.report.status["Seccomp_filters"] == "2"  # the zygote's, then jail.kafel
    held = cgroups.cpu_ceiling_ms_per_sec()  # a worker held to less (./dev slow-test) gives no more
    assert forked.cgroups["cgroup_cpu_ms_per_sec"] == (1000 if held is None else min(1000, held))
    assert forked.report.pid == 1 and forked.report.uid == 65534


def test_the_zygote_is_single_threaded_with_nothing_shared_or_written(
    warm: WarmLauncher,
) -> None:
    run_probe(warm, "build")  # a job has run: it changed nothing of the zygote's
    facts = warm.facts()
    assert facts.threads == 1
    assert facts.shared_writable == []
    assert facts.scratch == {d: (True, []) for d in ("/tmp", "/dev/shm", "/job")}


def test_policy_check_of_the_warm_path_holds_and_names_what_it_proves(
    warm: WarmLauncher,
) -> None:
    checks = verify_warm(warm)
    assert [f"{c.name}: {c.detail}" for c in checks if not c.ok] == []
    names = {c.name for c in checks}
    for name in (
        "pid namespace (the jailed program is PID 1)",
        "seccomp kills mount",
        "seccomp kills unshare(CLONE_NEWNS)",
        "seccomp kills setns",
        "file descriptors (0, 1, 2 and the frame pipe only)",
        "cgroup cgroup_mem_max",
        "forked from the zygote (not a cold fallback)",
        "seccomp filters stacked (the zygote's, then jail.kafel)",
        "zygote: no writable shared memory (a job's pages are its own copies)",
    ):
        assert name in names, name


def test_a_loosened_zygote_filter_fails_the_check(jail_tmp: Callable[[str], Path]) -> None:
    import shutil

    root = jail_tmp("policy")
    for d in ("sandbox", "seccomp"):
        shutil.copytree(default_root() / d, root / d)
    kafel = root / "seccomp" / "zygote.kafel"
    kafel.write_text(kafel.read_text().replace("    setns,\n", ""))
    launcher = WarmLauncher(NsjailLauncher(Policy(root)))
    try:
        failed = [c.detail for c in verify_warm(launcher) if not c.ok]
    finally:
        launcher.close()
    assert failed == ["expected [], found ['setns is allowed in the zygote but killed in a jail']"]


# --- when the zygote is not there --------------------------------------------------------------


def test_a_killed_zygote_sends_the_next_job_to_a_cold_jail_loudly(warm: WarmLauncher) -> None:
    run_probe(warm, "build")
    zygote_pid = warm.facts().host_pid
    os.kill(zygote_pid, signal.SIGKILL)
    assert _wait_for(lambda: not psutil.pid_exists(zygote_pid), 10)
    with structlog.testing.capture_logs() as logs:
        probed = run_probe(warm, "build")
    assert warm.counts["cold"] == 1
    assert probed.report.uid == 65534 and probed.report.status["Seccomp_filters"] == "1"
    fallback = [e for e in logs if e["event"] == "zygote.fallback"]
    assert fallback and fallback[0]["log_level"] == "warning"
    assert any(e["event"] == "zygote.failed" for e in logs)


def test_a_zygote_that_cannot_start_leaves_every_build_cold(
    jail_tmp: Callable[[str], Path],
) -> None:
    import shutil

    root = jail_tmp("policy")
    for d in ("sandbox", "seccomp"):
        shutil.copytree(default_root() / d, root / d)
    kafel = root / "seccomp" / "zygote.kafel"
    kafel.write_text(kafel.read_text().replace("    ptrace,", "    fstat,"))  # not x86_64
    launcher = WarmLauncher(NsjailLauncher(Policy(root)))
    try:
        with structlog.testing.capture_logs() as logs:
            first = run_probe(launcher, "build")
            second = run_probe(launcher, "build")
        assert launcher.counts["warm"] == 0 and launcher.counts["cold"] == 2
        assert first.report.uid == second.report.uid == 65534
        failed = [e for e in logs if e["event"] == "zygote.failed"]
        assert failed and "Could not compile policy" in failed[0]["reason"]
        assert launcher.counts["zygotes"] == 1  # no restart loop: it waits RETRY_AFTER_S
    finally:
        launcher.close()


def test_a_worn_out_zygote_is_replaced_and_stopped(warm: WarmLauncher) -> None:
    warm.recycling = Recycling(jobs=2)
    run_probe(warm, "build")
    first = warm.zygote_pids()
    run_probe(warm, "build")
    run_probe(warm, "build")
    assert warm.counts == {"warm": 3, "cold": 0, "zygotes": 2}
    assert _wait_for(lambda: not any(psutil.pid_exists(p) for p in first), 20)
    assert set(first).isdisjoint(warm.zygote_pids())


def test_a_zygote_dies_with_its_worker_and_its_cgroups_go(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import time
        from worker import logs
        from worker.sandbox.nsjail import NsjailLauncher
        from worker.sandbox.policy import Policy, default_root
        from worker.sandbox.zygote import WarmLauncher
        logs.configure(level="ERROR")
        w = WarmLauncher(NsjailLauncher(Policy(default_root())))
        print(w.facts().host_pid, *w.zygote_pids(), flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert pids and all(psutil.pid_exists(p) for p in pids)
        groups = [
            d
            for d in (cgroups.ROOT / "memory" / cgroups.PARENT).iterdir()
            if d.name.startswith(f"{owner.pid}-zygote-")
        ]
        assert len(groups) == 1
    finally:
        owner.kill()
        owner.wait()
    assert _wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), 10)
    remove_stale_cgroups()  # what the janitor does (or any worker starting on this machine)
    assert not groups[0].exists()


def _memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """Which of `needles` appear anywhere in the writable memory of process `pid`."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addresses, perms = line.split()[:2]
            if "w" not in perms:
                continue
            start, end = (int(a, 16) for a in addresses.split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except OSError:
                continue
            found |= {n for n in needles if n in chunk}
    return sorted(found)


def test_the_zygote_never_holds_anything_of_a_job(
    warm: WarmLauncher, tmp_path: Path, jail_tmp: Callable[[str], Path]
) -> None:
    """Every job gets a copy of the zygote's memory: what one job is (its source, its request
    id, its directory, its limits) must never have been in it."""
    import uuid

    from common.models.simulation import SimulationRequest
    from worker.pipeline import run_request
    from worker.settings import Settings
    from worker.storage.local import LocalStore

    token = uuid.uuid4().hex
    request = SimulationRequest.model_validate(
        {
            "request_id": f"zyg-{token[:24]}",
            "design": {"code": f"# source-{token}\nimport os\nresult = None\n"},
            "options": {"render": False, "duration_s": 0.1},
        }
    )
    settings = Settings(data_dir=tmp_path, sandbox="nsjail")
    r = run_request(request, settings, LocalStore(tmp_path / "a"), launcher=warm)
    assert r.failure == "NO_GEOMETRY"  # it ran, warm
    assert warm.counts["warm"] == 1
    zygote = warm.facts().host_pid
    assert _memory_holds(zygote, [f"source-{token}".encode(), token[:24].encode()]) == []
    known = b"worker.sandbox.build_child"  # the search finds what is there
    assert _memory_holds(zygote, [known]) == [known]

"""Where a worker's own v1 CPU group is, relative to its mount, from /proc/self/cgroup and
/proc/self/mountinfo as a host and a container show them (files written here, no cgroupfs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.sandbox import cgroups
from worker.sandbox.cgroups import own_cgroup

CONTAINER = "/libpod_parent/libpod-77e6"


def _files(tmp_path: Path, group: str, mount_root: str) -> tuple[Path, Path]:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(f"4:memory:{group}\n2:cpuacct:{group}\n1:cpu:{group}\n0::{group}\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "83 56 0:40 / / rw,relatime - overlay overlay rw\n"
        "94 86 0:47 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
        f"95 94 0:29 {mount_root} /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n"
        f"96 94 0:30 {mount_root} /sys/fs/cgroup/cpuacct ro,nosuid - cgroup cgroup rw,cpuacct\n"
        f"98 94 0:32 {mount_root} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
    )
    return cgroup, mountinfo


def test_a_host_process_nests_under_its_full_group(tmp_path: Path) -> None:
    cgroup, mountinfo = _files(tmp_path, "/user.slice/job-7", "/")
    assert own_cgroup("cpu", cgroup, mountinfo) == "user.slice/job-7"


def test_a_container_in_the_hosts_cgroup_namespace_nests_under_its_mount(tmp_path: Path) -> None:
    # podman on cgroup v1: /proc/self/cgroup names the container's group on the host, the
    # mount holds only that group's subtree: the worker's own group is the mount's root.
    cgroup, mountinfo = _files(tmp_path, CONTAINER, CONTAINER)
    assert own_cgroup("cpu", cgroup, mountinfo) == ""
    cgroup, mountinfo = _files(tmp_path, f"{CONTAINER}/worker", CONTAINER)
    assert own_cgroup("cpu", cgroup, mountinfo) == "worker"


def test_a_container_with_its_own_cgroup_namespace_is_at_the_root(tmp_path: Path) -> None:
    cgroup, mountinfo = _files(tmp_path, "/", "/")
    assert own_cgroup("cpu", cgroup, mountinfo) == ""


def test_unreadable_files_mean_the_root(tmp_path: Path) -> None:
    assert own_cgroup("cpu", tmp_path / "absent", tmp_path / "absent") == ""
    cgroup, _ = _files(tmp_path, "/a/b", "/")
    assert own_cgroup("cpu", cgroup, tmp_path / "absent") == "a/b"


def _tree(root: Path, quotas: dict[str, int]) -> None:
    """A fake v1 cpu hierarchy: each group with its quota (µs per 100 ms period, -1 none)."""
    for group, quota in quotas.items():
        d = root / "cpu" / group
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.cfs_period_us").write_text("100000\n")
        (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")


def test_a_jail_gets_no_more_cpu_than_the_workers_own_group_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `./dev slow-test` (half a core) nsjail's one-core quota inside the worker's group
    was refused by the kernel (EINVAL) and no jail started."""
    _tree(tmp_path, {"": -1, "slow": 50_000, "slow/inner": -1})
    monkeypatch.setattr(cgroups, "own_cgroup", lambda controller: "slow/inner")
    assert cgroups.cpu_ceiling_ms_per_sec(tmp_path) == 500
    cg = cgroups.JobCgroups(job="1-build-x", memory_bytes=1, pids_max=1, root=tmp_path,
                            cpu_ms_per_sec=1000)  # fmt: skip
    assert cg.cpu_ms_per_sec == 500  # a warm build's own quota
    assert cg.cpu_args(1000) == ["--cgroup_cpu_ms_per_sec", "500"]  # a cold jail's nsjail
    assert cg.cpu_args(200) == []  # a policy tighter than the worker's group stands


def test_honest_twin_an_unlimited_worker_leaves_the_policys_cpu_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, {"": -1, "w": -1})
    monkeypatch.setattr(cgroups, "own_cgroup", lambda controller: "w")
    assert cgroups.cpu_ceiling_ms_per_sec(tmp_path) is None
    cg = cgroups.JobCgroups(job="1-build-x", memory_bytes=1, pids_max=1, root=tmp_path,
                            cpu_ms_per_sec=1000)  # fmt: skip
    assert cg.cpu_ms_per_sec == 1000 and cg.cpu_args(1000) == []

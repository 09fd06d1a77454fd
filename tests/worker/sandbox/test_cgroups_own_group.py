"""Where a worker's own v1 CPU group is, relative to its mount, from /proc/self/cgroup and
/proc/self/mountinfo as a host and a container show them (files written here, no cgroupfs)."""

from __future__ import annotations

from pathlib import Path

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

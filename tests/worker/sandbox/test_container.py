"""The operator's sentence for each thing a too-restricted container lacks, recognised in the
very lines nsjail and the worker printed in such containers (podman 4.3, runc, cgroup v1; the
container test in tests/deploy/ sees them from the real worker)."""

from __future__ import annotations

from worker.sandbox.container import advice, lacks

MASKED_PROC = (
    "[W][2026-12-01T11:33:54+0000][1] mountSinglePoint():225 mount('none' -> "
    "'/tmp/nsjail.0.root//proc'): procfs mount may fail if /proc has overmounts (e.g., "
    "/dev/null on /proc/kcore): Operation not permitted; [E][2026-12-01T11:33:54+0000][1] "
    "buildMountTree():328 Failed to mount mandatory point: '/proc'"
)
SECCOMP = (
    "[E][2026-12-01T11:33:55+0000][1] initNs():37 sethostname('simjail'): Operation not "
    "permitted; [F][2026-12-01T11:33:55+0000][1] runChild():506 Launching child process failed"
)
READ_ONLY_CGROUPS = (
    "cannot set up cgroups under /sys/fs/cgroup: [Errno 30] Read-only file system: "
    "'/sys/fs/cgroup/memory/simjail'"
)
NO_SETGID = (
    "[E][2026-12-01T11:34:20+0000][12] writeBufToFile():138 Couldn't write '14' bytes to file "
    "'/proc/13/gid_map' (fd='7'): Operation not permitted"
)
NO_CHOWN = (
    "cannot start the physics probe child: [Errno 1] Operation not permitted: "
    "'/tmp/simjail-probe-oeo4v3_z/physics-out'"
)


def test_a_masked_proc_names_unmask_and_privileged() -> None:
    text = advice(MASKED_PROC, in_container="podman")
    assert "(in a podman container)" in text
    assert "/proc is masked" in text
    assert "--security-opt unmask=ALL" in text and "systempaths=unconfined" in text


def test_a_seccomp_profile_without_sethostname_names_seccomp_unconfined() -> None:
    text = advice(SECCOMP, in_container="podman")
    assert "seccomp profile forbids sethostname" in text
    assert "--security-opt seccomp=unconfined" in text


def test_read_only_cgroups_name_privileged() -> None:
    text = advice(READ_ONLY_CGROUPS, in_container="docker")
    assert "(in a docker container)" in text
    assert "cgroup filesystem is read-only" in text and "--privileged" in text


def test_missing_capabilities_are_named() -> None:
    assert [lack.fix.split()[1] for lack in lacks(NO_SETGID)] == ["CAP_SETGID"]
    assert [lack.fix.split()[1] for lack in lacks(NO_CHOWN)] == ["CAP_CHOWN"]


def test_an_unknown_failure_gets_no_advice() -> None:
    # The honest twin: a broken policy file is not the container's fault.
    assert advice("[W] Could not compile policy: 9:5: Undefined identifier `fstat'") == ""
    assert advice("nsjail exited 255", in_container="podman") == ""

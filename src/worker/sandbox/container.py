"""What a container must allow for nsjail to make its jails, and the sentence that tells an
operator which of it is missing when a jail does not start.

Measured with podman 4.3 and runc on cgroup v1 (README.md, "What the worker container needs"):
the worker runs as root in its container with CAP_SETUID and CAP_SETGID (nsjail writes the
jail's uid and gid maps, 65534 → 65534) and CAP_CHOWN (the physics jail's output directory is
handed to 65534); nsjail mounts a fresh /proc for the jail's pid namespace, which the kernel
refuses while the engine masks parts of the container's /proc; it sets the jail's hostname,
which podman's default seccomp profile allows only with CAP_SYS_ADMIN; and the supervisor and
nsjail make per-job groups in the memory, pids and cpu hierarchies, which engines mount
read-only in unprivileged containers on cgroup v1. `--privileged` gives all of it.

Each `Lack` is recognised by text that nsjail's log or the error of a failed call carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENGINE_MARKERS = {Path("/run/.containerenv"): "podman", Path("/.dockerenv"): "docker"}


@dataclass(frozen=True)
class Lack:
    signs: tuple[str, ...]
    """Every one of these appears in the failure's text."""
    what: str
    fix: str


LACKS = (
    Lack(
        ("procfs mount may fail if /proc has overmounts",),
        "/proc is masked (the container engine covers /proc/kcore, /proc/keys, …), so the "
        "kernel refuses the jail's own /proc",
        "run the worker container with --security-opt unmask=ALL (podman), --security-opt "
        "systempaths=unconfined (docker), or --privileged",
    ),
    Lack(
        ("sethostname(", "Operation not permitted"),
        "the container's seccomp profile forbids sethostname in the jail's own UTS namespace "
        "(podman's default allows it only with CAP_SYS_ADMIN)",
        "run the worker container with --security-opt seccomp=unconfined, or --privileged "
        "(each jail still gets simjail's own seccomp policy)",
    ),
    Lack(
        ("clone(", "Operation not permitted"),
        "the container may not create namespaces (docker's default seccomp profile allows "
        "that only with CAP_SYS_ADMIN; AppArmor's docker-default profile forbids mounts)",
        "run the worker container with --security-opt seccomp=unconfined and --security-opt "
        "apparmor=unconfined, or --privileged",
    ),
    Lack(
        ("uid_map", "Operation not permitted"),
        "the worker lacks CAP_SETUID, which nsjail needs to map the jail's user to uid 65534",
        "keep CAP_SETUID (a default capability; do not --cap-drop it), or --privileged",
    ),
    Lack(
        ("gid_map", "Operation not permitted"),
        "the worker lacks CAP_SETGID, which nsjail needs to map the jail's group to gid 65534",
        "keep CAP_SETGID (a default capability; do not --cap-drop it), or --privileged",
    ),
    Lack(
        ("Read-only file system", "/sys/fs/cgroup"),
        "the cgroup filesystem is read-only (container engines mount it so in unprivileged "
        "containers on cgroup v1), so no per-job memory, pids and CPU group can be made",
        "run the worker container with --privileged (or give it CAP_SYS_ADMIN and remount "
        "/sys/fs/cgroup/memory, pids and cpu read-write before the worker starts)",
    ),
    Lack(
        ("Operation not permitted", "-out"),
        "the worker lacks CAP_CHOWN, which it needs to hand the physics jail's output "
        "directory to uid 65534",
        "keep CAP_CHOWN (a default capability; do not --cap-drop it), or --privileged",
    ),
)


def engine() -> str | None:
    """The container engine this process runs under, when it marks its containers."""
    for marker, name in ENGINE_MARKERS.items():
        if marker.exists():
            return name
    return None


def lacks(failure: str) -> list[Lack]:
    """The known lacks whose signs all appear in `failure` (nsjail's log, an OSError)."""
    return [lack for lack in LACKS if all(sign in failure for sign in lack.signs)]


def advice(failure: str, *, in_container: str | None = None) -> str:
    """Sentences, to append to an error, naming what is missing and how to give it; "" when
    the failure matches nothing known. `in_container` defaults to `engine()`."""
    found = lacks(failure)
    if not found:
        return ""
    where = in_container if in_container is not None else engine()
    head = f" (in a {where} container)" if where else ""
    return f" — the sandbox cannot work here{head}: " + "; ".join(
        f"{lack.what}: {lack.fix}" for lack in found
    )

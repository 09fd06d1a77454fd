"""Start a real jail running `worker.sandbox.probe_child` and compare what it saw with what the
policy promises.

`probe` is the worker's start-up check (a physics jail must render offscreen, or the worker
refuses to serve instead of failing every job). `verify` is `simjail policy check`: every limit
and namespace the policy file states, checked from inside a real jail (rlimits, uid and gid
maps, capabilities, no_new_privs, seccomp mode, which forbidden calls really kill, the x32 ABI,
read-only mounts, tmpfs sizes, network interfaces, hostname) and from outside while it runs
(its cgroup memory, pids and CPU limits). Any difference is a failed Check, loudly.
"""

from __future__ import annotations

import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import InfrastructureError
from worker.owners import mark_owner
from worker.sandbox.cgroups import cpu_ceiling_ms_per_sec
from worker.sandbox.container import advice
from worker.sandbox.launcher import Launcher, LaunchSpec, Prepared
from worker.sandbox.policy import Policy, Promise, promise
from worker.sandbox.protocol import (
    ProbeJob,
    ProbeReport,
    ProgressFrame,
    ProtocolError,
    probe_report,
)
from worker.sandbox.supervisor import LaunchError, classify, run_child

if TYPE_CHECKING:
    from worker.sandbox.zygote import WarmLauncher

JAIL_UID = 65534
NO_CAPABILITIES = "0000000000000000"
SECCOMP_FILTER = "2"
ENOSYS = 38


class ProbeFailed(InfrastructureError):
    """A probe jail did not start, did not run as the jail's user, or could not render."""

    cause = "sandbox"


@dataclass(frozen=True)
class Check:
    jail: str
    name: str
    ok: bool
    detail: str
    """What was expected and what held, in one line."""


@dataclass(frozen=True)
class Probed:
    report: ProbeReport
    cgroups: dict[str, int | None]
    """The jail's cgroup limits read from outside while it ran (empty: no cgroups)."""
    env: dict[str, str]
    """The SIMJAIL_* paths nsjail was given (the mounts' destinations)."""
    limits: dict[str, int]
    """The numeric limits the probe's jail was started with."""
    wall_s: float


class _Watching:
    """The launcher, recording the run it prepared: the probe reads its cgroups."""

    def __init__(self, inner: Launcher) -> None:
        self.inner = inner
        self.name = inner.name
        self.prepared: Prepared | None = None

    @property
    def policy(self) -> Policy | None:
        return self.inner.policy

    def limits(self, spec: LaunchSpec) -> dict[str, int]:
        return self.inner.limits(spec)

    def close(self) -> None:
        pass  # the inner launcher is the caller's

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> Prepared:
        self.prepared = self.inner.prepare(spec, frame_fd=frame_fd, log_fd=log_fd)
        return self.prepared


def run_probe(launcher: Launcher, jail: str) -> Probed:
    """Run the probe child in a `jail` jail; raises ProbeFailed if it did not run cleanly."""
    with tempfile.TemporaryDirectory(prefix="simjail-probe-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)
        mark_owner(root)  # removed by the next worker if this one is killed mid-probe
        job = root / jail
        job.mkdir()
        job.chmod(0o755)
        render = jail == "physics"
        ProbeJob(render=render).write(job / "job.json")
        out = root / f"{jail}-out"
        out.mkdir()
        spec = LaunchSpec(
            name=f"{jail} probe",
            jail=jail,
            module="worker.sandbox.probe_child",
            job_dir=job,
            wall_s=60,
            cpu_s=60,
            memory_mb=1024,
            out_dir=out if render else None,
        )
        watching = _Watching(launcher)
        cgroups: dict[str, int | None] = {}

        def read_cgroups(_: ProgressFrame) -> None:
            groups = getattr(watching.prepared, "cgroups", None)
            if groups is not None:
                cgroups.update(groups.in_force())

        t = time.monotonic()
        try:
            res = run_child(watching, spec, on_progress=read_cgroups)
        except LaunchError as e:
            raise ProbeFailed(f"the {jail} jail did not start: {e}{advice(str(e))}") from None
        problem = None
        failed = classify(res)
        report = None
        if failed is not None:
            problem = failed.reason
        else:
            assert res.result is not None
            try:
                report = probe_report(res.result)
            except ProtocolError as e:
                problem = str(e)
        if report is None or problem is not None:
            tail = res.stderr.strip()[-2000:]
            raise ProbeFailed(
                f"the {jail} jail probe failed: {problem}" + (f"\n{tail}" if tail else "")
            )
        env = dict(getattr(watching.prepared, "env", {}))
        return Probed(report, cgroups, env, launcher.limits(spec), round(time.monotonic() - t, 3))


def probe(launcher: Launcher, jail: str) -> Probed:
    """The worker's start-up check: the jail runs as the jail's user and (physics) renders.
    Raises ProbeFailed with the reason and the child's last output."""
    p = run_probe(launcher, jail)
    problem = None
    if launcher.policy is not None and p.report.uid != JAIL_UID:
        problem = f"the jail runs as uid {p.report.uid}, not {JAIL_UID}"
    elif jail == "physics" and p.report.rendered_mean is None:
        problem = "it rendered nothing"
    if problem is not None:
        raise ProbeFailed(f"the {jail} jail probe failed: {problem}")
    return p


def verify(launcher: Launcher, jail: str) -> list[Check]:
    """Every promise of the policy file, checked in a real jail (see the module docstring)."""
    if launcher.policy is None:
        raise ProbeFailed("the unsafe launcher enforces no policy: there is nothing to verify")
    p = probe(launcher, jail)
    want = promise(launcher.policy, jail, p.env)
    return [Check(jail, *c) for c in _compare(want, p)]


def _own_filters() -> int:
    """The seccomp filters this process already runs under (a container's runtime adds one:
    podman's default profile), which every jail it starts inherits beneath its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Seccomp_filters:"):
            return int(line.split()[1])
    return 0


def verify_warm(launcher: WarmLauncher) -> list[Check]:
    """A warm build job's jail, checked against every promise of build.cfg exactly as a cold
    build jail is (the job was forked from the zygote and built its jail itself), and what
    makes the zygote safe to fork from: one thread, no writable shared memory, empty read-only
    scratch mounts, its filter only the allowed loosening of jail.kafel, and the job's filter
    stacked on it."""
    from worker.sandbox.seccomp import zygote_differences

    label = "build (warm)"
    warm_before = launcher.counts["warm"]
    p = probe(launcher, "build")
    want = promise(launcher.policy, "build", p.env)
    out = [Check(label, *c) for c in _compare(want, p)]

    def check(name: str, expected: object, got: object) -> None:
        out.append(Check(label, name, expected == got, f"expected {expected!r}, found {got!r}"))

    check("forked from the zygote (not a cold fallback)", warm_before + 1, launcher.counts["warm"])
    check("seccomp filters stacked (the zygote's, then jail.kafel)", str(_own_filters() + 2),
          p.report.status.get("Seccomp_filters"))  # fmt: skip
    policy = launcher.policy
    check(
        "seccomp/zygote.kafel = jail.kafel with only mount, umount, unshare loosened",
        [],
        zygote_differences(
            policy.seccomp_file("build").read_text(), policy.seccomp_file("zygote").read_text()
        ),
    )
    z = launcher.facts()
    check("zygote: one thread (fork copies only the calling one)", 1, z.threads)
    check("zygote: no writable shared memory (a job's pages are its own copies)", [],
          z.shared_writable)  # fmt: skip
    for point, (ro, entries) in z.scratch.items():
        check(f"zygote: {point} read-only and empty", (True, []), (ro, entries))
    return out


def _compare(want: Promise, p: Probed) -> list[tuple[str, bool, str]]:
    r = p.report
    out: list[tuple[str, bool, str]] = []

    def check(name: str, expected: object, got: object) -> None:
        out.append((name, expected == got, f"expected {expected!r}, the jail has {got!r}"))

    check("uid and gid", (JAIL_UID, JAIL_UID), (r.uid, r.gid))
    check("uid map (inside outside count)", f"{want.uid_map[0]} {JAIL_UID} 1", r.uid_map)
    check("gid map (inside outside count)", f"{want.gid_map[0]} {JAIL_UID} 1", r.gid_map)
    check("pid namespace (the jailed program is PID 1)", 1, r.pid)
    check("hostname", want.hostname, r.hostname)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        check(f"capabilities {cap}", NO_CAPABILITIES, r.status.get(cap))
    check("no_new_privs", "1", r.status.get("NoNewPrivs"))
    check("seccomp mode (2: filter)", SECCOMP_FILTER, r.status.get("Seccomp"))
    for call, ended in r.denied.items():
        check(f"seccomp kills {call}", -signal.SIGSYS, ended)
    check("seccomp answers clone3 with ENOSYS (glibc falls back to clone)", ENOSYS, r.clone3_errno)
    check("environment (exactly the envar lines)", list(want.env_keys), r.env_keys)
    check("file descriptors (0, 1, 2 and the frame pipe only)", [0, 1, 2, r.frame_fd], r.fds)
    check("x32 syscall ABI (a name-based filter does not see it)", ENOSYS, r.x32_errno)
    if want.no_interfaces:
        check("network interfaces up (not even loopback)", [], r.interfaces)
    writable = sorted(m for m, ro in r.mounts if not ro)
    check("writable mounts (every other one read-only)", sorted(want.writable), writable)
    for point, size in want.tmpfs_bytes.items():
        check(f"tmpfs size of {point}", size, r.tmpfs_bytes.get(point))
    tightened = {"Max cpu time": p.limits.get("rlimit_cpu")}
    for row, value in want.rlimits.items():
        expected = tightened.get(row) or value
        check(f"rlimit {row} (soft, hard)", (expected, expected), tuple(r.limits.get(row, ())))
    if p.cgroups:
        for key in ("cgroup_mem_max", "cgroup_pids_max"):
            check(f"cgroup {key}", p.limits[key], p.cgroups.get(key))
        cpu = want.cgroup_cpu_ms_per_sec or None
        ceiling = cpu_ceiling_ms_per_sec()  # a worker held to less gives its jails no more
        if cpu is not None and ceiling is not None:
            cpu = min(cpu, ceiling)
        check("cgroup cgroup_cpu_ms_per_sec", cpu, p.cgroups.get("cgroup_cpu_ms_per_sec"))
    return out

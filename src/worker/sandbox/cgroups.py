"""Per-job parent cgroups, created and read by the supervisor.

nsjail puts each jail in a cgroup of its own and deletes it on exit, taking the counters with it.
So the supervisor creates a parent group per job (`simjail/<job>`), lets nsjail nest its group
inside, and puts the memory limit on the parent: the OOM then happens at the parent, whose
counters survive the jail. After the run the supervisor reads them, kills anything still inside,
and removes the groups. cgroup v1 (separate memory and pids hierarchies) and v2 (one unified
tree) are both handled; this machine runs v1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "simjail"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """The supervisor cannot create or control its cgroups (not root, no cgroupfs)."""


@dataclass(frozen=True)
class Usage:
    peak_memory_bytes: int | None
    memory_limit_hit: bool
    pids_limit_hit: bool


def version(root: Path = ROOT) -> int:
    return 2 if (root / "cgroup.controllers").exists() else 1


def own_cgroup(
    controller: str,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    mountinfo: Path = Path("/proc/self/mountinfo"),
) -> str:
    """This process's group in a v1 hierarchy (`cpu`), relative to where that hierarchy is
    mounted ("" for the mount's root): the per-job CPU groups nest under it, so a worker started
    inside a CPU quota (a container, a systemd slice, `./dev slow-test`) keeps its jails inside
    that quota too. A container in the host's cgroup namespace (podman's default on cgroup v1)
    sees its full path in /proc/self/cgroup but has only its own subtree mounted: the path is
    taken relative to the mount's root (mountinfo's fourth field)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return ""
    path = ""
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controller in controllers.split(","):
            path = group.strip("/")
            break
    root = _mount_root(controller, mountinfo)
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :].strip("/")
    return path


def _mount_root(controller: str, mountinfo: Path) -> str:
    """The root (inside the hierarchy) of the v1 mount of `controller` under ROOT; "" for the
    hierarchy's own root or when it cannot be read."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3 or after[0] != "cgroup":
            continue
        if controller in after[2].split(",") and Path(fields[4]).is_relative_to(ROOT):
            return fields[3].strip("/")
    return ""


def cpu_ceiling_ms_per_sec(root: Path = ROOT) -> int | None:
    """The CPU (ms per second of wall) that this process's own CPU group, and every group
    above it, allows; None when none is limited. On cgroup v1 a group's quota may not exceed
    its parent's (the kernel answers EINVAL and nsjail cannot start), so a jail inside a
    worker held to half a core (`./dev slow-test`, a container's --cpus) gets at most that."""
    if version(root) != 1:
        return None  # v2: a child may ask for more; it simply gets no more than its parent
    top = root / "cpu"
    d = top / own_cgroup("cpu")
    best: int | None = None
    while True:
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text())
            period = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            quota, period = -1, 1
        if quota > 0:
            allowed = quota * 1000 // period
            best = allowed if best is None else min(best, allowed)
        if d == top or top not in d.parents:
            return best
        d = d.parent


@dataclass
class JobCgroups:
    """The parent cgroups of one job. `relative` is what nsjail's --cgroup_*_parent takes."""

    job: str
    memory_bytes: int
    pids_max: int
    root: Path = ROOT
    cpu_ms_per_sec: int | None = None
    """A CPU quota on the job's own group: set for a warm build, whose process the supervisor
    moves in itself (`add`); a cold jail's quota is on nsjail's group inside (None here)."""

    def __post_init__(self) -> None:
        self.relative = f"{PARENT}/{self.job}"
        """What nsjail's --cgroup_mem_parent and --cgroup_pids_parent take."""
        self.cpu_relative = "/".join(p for p in (own_cgroup("cpu"), PARENT, self.job) if p)
        """What --cgroup_cpu_parent takes: under this process's own CPU group."""
        self.cpu_ceiling = cpu_ceiling_ms_per_sec(self.root)
        if self.cpu_ms_per_sec and self.cpu_ceiling is not None:
            self.cpu_ms_per_sec = min(self.cpu_ms_per_sec, self.cpu_ceiling)
        self.v = version(self.root)
        if self.v == 1:
            self.dirs = [
                self.root / "memory" / self.relative,
                self.root / "pids" / self.relative,
                self.root / "cpu" / self.cpu_relative,
            ]
        else:
            self.dirs = [self.root / self.relative]

    def cpu_args(self, policy_ms_per_sec: int) -> list[str]:
        """nsjail's --cgroup_cpu_ms_per_sec when the policy's is more than this process's own
        group allows (nothing otherwise: the policy file's value stands)."""
        if self.cpu_ceiling is None or not 0 < self.cpu_ceiling < policy_ms_per_sec:
            return []
        return ["--cgroup_cpu_ms_per_sec", str(self.cpu_ceiling)]

    def create(self) -> None:
        try:
            if self.v == 1:
                mem, pids, cpu = self.dirs
                mem.mkdir(parents=True, exist_ok=True)
                pids.mkdir(parents=True, exist_ok=True)
                # No limit here for a cold jail: nsjail puts the policy's cgroup_cpu_ms_per_sec
                # on its own group inside; this parent only holds it, for cleanup and stale
                # removal. A warm build's process lives here itself: its quota is here.
                cpu.mkdir(parents=True, exist_ok=True)
                if self.cpu_ms_per_sec:
                    _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
                    _write(cpu / "cpu.cfs_quota_us", self.cpu_ms_per_sec * CPU_PERIOD_US // 1000)
                _write(mem / "memory.limit_in_bytes", self.memory_bytes)
                with contextlib.suppress(OSError):  # absent without swap accounting
                    _write(mem / "memory.memsw.limit_in_bytes", self.memory_bytes)
                _write(pids / "pids.max", self.pids_max)
            else:
                (self.root / PARENT).mkdir(exist_ok=True)
                _write(self.root / "cgroup.subtree_control", "+memory +pids +cpu")
                _write(self.root / PARENT / "cgroup.subtree_control", "+memory +pids +cpu")
                d = self.dirs[0]
                d.mkdir(exist_ok=True)
                _write(d / "memory.max", self.memory_bytes)
                _write(d / "memory.swap.max", 0)
                _write(d / "pids.max", self.pids_max)
                if self.cpu_ms_per_sec:
                    quota = self.cpu_ms_per_sec * CPU_PERIOD_US // 1000
                    _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
                _write(d / "cgroup.subtree_control", "+memory +pids +cpu")
        except OSError as e:
            self.remove()
            raise CgroupError(f"cannot set up cgroups under {self.root}: {e}") from e

    def add(self, pid: int) -> None:
        """Move process `pid` into these groups (a warm build, before it runs any design code;
        what it starts stays inside). v2 has no processes in an inner group: a leaf holds it."""
        if self.v == 1:
            for d in self.dirs:
                _write(d / "cgroup.procs", pid)
        else:
            leaf = self.dirs[0] / "job"
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", pid)

    def kill(self) -> None:
        """SIGKILL to every process in these groups."""
        for d in self.dirs:
            _kill_all(d)

    def usage(self) -> Usage:
        peak: int | None
        try:
            if self.v == 1:
                mem, pids, _ = self.dirs
                peak = int(_read(mem / "memory.max_usage_in_bytes"))
                # memory.failcnt alone misses the OOM: with memsw limited too, the memsw counter
                # is charged first and fails first, and kernels from 6.13 on count no failcnt
                # for memsw (measured on 6.18: failcnt 0 after an OOM kill). The OOM kill itself
                # is counted in the victim's group, which nsjail deletes. The peak reaching the
                # limit is what remains.
                limit = int(_read(mem / "memory.limit_in_bytes"))
                hit = (
                    peak >= limit
                    or int(_read(mem / "memory.failcnt")) > 0
                    or _int_or_0(mem / "memory.memsw.failcnt") > 0
                )
                pids_hit = _events(pids / "pids.events").get("max", 0) > 0
            else:
                d = self.dirs[0]
                peak = int(_read(d / "memory.peak")) if (d / "memory.peak").exists() else None
                ev = _events(d / "memory.events")
                hit = ev.get("oom_kill", 0) > 0 or ev.get("max", 0) > 0
                pids_hit = _events(d / "pids.events").get("max", 0) > 0
        except (OSError, ValueError):
            return Usage(None, False, False)
        return Usage(peak, hit, pids_hit)

    def cpu_time_s(self) -> float | None:
        """CPU seconds of every process in these groups now, with what each has reaped (the
        jail's PID 1 reaps the rest), from /proc/<pid>/stat; None when unreadable."""
        procs = self.dirs[1] if self.v == 1 else self.dirs[0]
        ticks = 0
        try:
            pids = {int(p) for f in procs.rglob("cgroup.procs") for p in f.read_text().split()}
        except (OSError, ValueError):
            return None
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return ticks / CLOCK_TICKS

    def in_force(self) -> dict[str, int | None]:
        """The limits that hold for a jail inside these groups now (while it runs): memory and
        pids the tighter of this parent's and nsjail's own group's, CPU nsjail's quota in ms
        per second (None: no limit, or not readable)."""
        found: dict[str, int | None] = {}
        if self.v == 1:
            mem, pids, cpu = self.dirs
            found["cgroup_mem_max"] = _tightest(mem, "memory.limit_in_bytes")
            found["cgroup_pids_max"] = _tightest(pids, "pids.max")
            limited = []
            for g in [cpu, *cpu.glob("NSJAIL.*")]:
                with contextlib.suppress(OSError, ValueError):
                    q = int(_read(g / "cpu.cfs_quota_us"))
                    if q > 0:
                        limited.append(q * 1000 // int(_read(g / "cpu.cfs_period_us")))
            found["cgroup_cpu_ms_per_sec"] = min(limited) if limited else None
        else:
            d = self.dirs[0]
            found["cgroup_mem_max"] = _tightest(d, "memory.max")
            found["cgroup_pids_max"] = _tightest(d, "pids.max")
            limited = []
            for g in [d, *d.glob("NSJAIL.*")]:
                with contextlib.suppress(OSError, ValueError):
                    quota, period = _read(g / "cpu.max").split()
                    if quota != "max":
                        limited.append(int(quota) * 1000 // int(period))
            found["cgroup_cpu_ms_per_sec"] = min(limited) if limited else None
        return found

    def remove(self) -> None:
        """Kill whatever is still inside (nsjail itself may have been killed) and remove the
        groups, nsjail's leftovers included. Never raises."""
        for d in self.dirs:
            for _ in range(50):
                if not d.exists():
                    break
                _kill_all(d)
                for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()
                    break
                time.sleep(0.02)


def groups_of(pid: int, root: Path = ROOT) -> list[Path]:
    """The per-job groups a worker with this pid made (`simjail/<pid>-<jail>-<id>`) that still
    exist: after its jobs ended, none should."""
    found: list[Path] = []
    for top in (root / "memory" / PARENT, root / "pids" / PARENT, root / PARENT):
        if top.is_dir():
            found += sorted(d for d in top.iterdir() if d.is_dir() and d.name.startswith(f"{pid}-"))
    return found


def _kill_all(d: Path) -> None:
    for procs in d.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            for line in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(line), signal.SIGKILL)


def _tightest(d: Path, name: str) -> int | None:
    """The smallest value of the file `name` in `d` and in nsjail's groups below it."""
    values = []
    for g in [d, *d.glob("NSJAIL.*")]:
        with contextlib.suppress(OSError, ValueError):
            text = _read(g / name)
            if text != "max":
                values.append(int(text))
    return min(values) if values else None


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def _read(path: Path) -> str:
    return path.read_text().strip()


def _events(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[k] = int(v)
    return out


def _int_or_0(path: Path) -> int:
    """A counter that may be absent (memsw files exist only with swap accounting)."""
    try:
        return int(_read(path))
    except (OSError, ValueError):
        return 0

"""The sandbox policy files: where they are, their digest, their ceilings.

Policy is data: `sandbox/<jail>.cfg` (nsjail textproto) and `seccomp/*.kafel`, at the top of the
project. This module only locates and hashes them, and reads the few numeric ceilings that a job
may tighten but never exceed. It never edits them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

JAILS = ("build", "physics")
ZYGOTE = "zygote"
"""sandbox/zygote.cfg: the jail of the process warm build jobs are forked from (not a job's)."""
TIGHTENABLE = ("time_limit", "rlimit_cpu", "cgroup_mem_max", "cgroup_pids_max")
"""Numeric settings a job may lower (never raise) with nsjail's command-line flags."""


class PolicyError(RuntimeError):
    """The policy files are missing or malformed: simjail refuses to run untrusted code."""


def default_root() -> Path:
    """The project root holding sandbox/ and seccomp/ (the checkout, or SIMJAIL_POLICY_DIR)."""
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Policy:
    root: Path
    """Directory holding sandbox/ and seccomp/; nsjail runs there so relative paths resolve."""

    def config(self, jail: str) -> Path:
        if jail not in (*JAILS, ZYGOTE):
            raise PolicyError(f"unknown jail {jail!r}")
        path = self.root / "sandbox" / f"{jail}.cfg"
        if not path.is_file():
            raise PolicyError(f"policy file {path} is missing")
        return path

    def files(self) -> list[Path]:
        files = sorted((self.root / "sandbox").glob("*.cfg")) + sorted(
            (self.root / "seccomp").glob("*.kafel")
        )
        if not files:
            raise PolicyError(f"no policy files under {self.root}/sandbox and seccomp")
        return files

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each policy file, by its path relative to the root."""
        return {
            f.relative_to(self.root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in self.files()
        }

    def digest(self) -> str:
        """sha256 over every policy file's name and bytes (the files alone; a result's
        `policy_digest` is `judging_digest`, which adds the limits and the launcher)."""
        h = hashlib.sha256()
        for f in self.files():
            h.update(f.relative_to(self.root).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
        return "sha256:" + h.hexdigest()

    def ceilings(self, jail: str) -> dict[str, int]:
        """Top-level numeric values of TIGHTENABLE keys in the jail's config."""
        text = self.config(jail).read_text()
        out: dict[str, int] = {}
        for key in TIGHTENABLE:
            m = re.search(rf"^{key}:\s*(\d+)", text, re.M)
            if m is None:
                raise PolicyError(f"{self.config(jail)} sets no {key}")
            out[key] = int(m.group(1))
        return out

    def cpu_ms_per_sec(self, jail: str) -> int:
        """The jail's `cgroup_cpu_ms_per_sec` (0: no CPU quota)."""
        m = re.search(r"^cgroup_cpu_ms_per_sec:\s*(\d+)", self.config(jail).read_text(), re.M)
        return int(m.group(1)) if m else 0

    def seccomp_file(self, jail: str) -> Path:
        text = self.config(jail).read_text()
        m = re.search(r'^seccomp_policy_file:\s*"([^"]+)"', text, re.M)
        if m is None:
            raise PolicyError(f"{self.config(jail)} names no seccomp_policy_file")
        return self.root / m.group(1)


def judging_record(
    launcher: str,
    policy: Policy | None,
    jail_limits: Mapping[str, Mapping[str, int]],
    job_limits: Mapping[str, float | int],
) -> dict[str, object]:
    """Everything that judged a run: the launcher, the sha256 of every policy file (none for
    the unsafe launcher), the numeric limits each jail was started with, and the job's own
    limits and caps (time, CPU, memory, parts, triangles, output, frames, artifacts)."""
    return {
        "launcher": launcher,
        "files": policy.file_hashes() if policy is not None else {},
        "jails": {jail: dict(sorted(lim.items())) for jail, lim in sorted(jail_limits.items())},
        "job": dict(sorted(job_limits.items())),
    }


def judging_digest(record: Mapping[str, object]) -> str:
    """`sha256:` of the canonical JSON of a judging_record: a result's `policy_digest`."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# --- What the files promise, for `simjail policy check` to compare with what a jail sees ------

RLIMITS = {
    # policy key: (row of /proc/self/limits, unit of the policy value in the row's units, nsjail's
    # default type: with SOFT nsjail keeps the inherited limit unless `<key>_type: VALUE`)
    "rlimit_as": ("Max address space", 2**20, "VALUE"),
    "rlimit_core": ("Max core file size", 2**20, "VALUE"),
    "rlimit_cpu": ("Max cpu time", 1, "VALUE"),
    "rlimit_fsize": ("Max file size", 2**20, "VALUE"),
    "rlimit_nofile": ("Max open files", 1, "VALUE"),
    "rlimit_nproc": ("Max processes", 1, "SOFT"),
    "rlimit_stack": ("Max stack size", 2**20, "SOFT"),
    "rlimit_memlock": ("Max locked memory", 1024, "SOFT"),
    "rlimit_rtprio": ("Max realtime priority", 1, "SOFT"),
    "rlimit_msgqueue": ("Max msgqueue size", 1, "SOFT"),
}


@dataclass(frozen=True)
class Promise:
    """What a jail's policy file says must hold inside it (the job may only tighten the
    TIGHTENABLE numbers; `simjail policy check` applies those of its probe)."""

    rlimits: dict[str, int | None]
    """Row of /proc/self/limits → soft and hard value the file asks for (None: unlimited)."""
    uid_map: tuple[int, int]
    """(inside, outside) of the one uid the jail maps; outside must be the unprivileged 65534."""
    gid_map: tuple[int, int]
    hostname: str
    no_interfaces: bool
    writable: frozenset[str]
    """Mount points the jail may write; every other mount is read-only."""
    tmpfs_bytes: dict[str, int]
    cgroup_cpu_ms_per_sec: int
    env_keys: tuple[str, ...] = ()
    """The names the `envar` lines set: the jailed program's whole environment."""


def _top_level(text: str) -> dict[str, str]:
    """`key: value` lines at the top level of a textproto (quotes and comments dropped)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+):\s*(\"[^\"]*\"|\S+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


def _mounts(text: str) -> list[dict[str, str]]:
    blocks = re.findall(r"^mount\s*\{(.*?)\}", text, re.M | re.S)
    return [
        {k: v.strip('"') for k, v in re.findall(r"(\w+):\s*(\"[^\"]*\"|\S+)", b)} for b in blocks
    ]


def promise(policy: Policy, jail: str, env: dict[str, str]) -> Promise:
    """What `sandbox/<jail>.cfg` promises, read as a reviewer reads it; `env` holds the paths
    the supervisor passes (SIMJAIL_*), for the mounts whose destination comes from one."""
    text = policy.config(jail).read_text()
    top = _top_level(text)
    rlimits: dict[str, int | None] = {}
    for key, (row, unit, _) in RLIMITS.items():
        kind = top.get(f"{key}_type")
        if kind == "INF":
            rlimits[row] = None
        elif key in top and kind in (None, "VALUE"):
            # A value line means that value, also where nsjail's default type ignores it
            # (rlimit_stack: 64 without rlimit_stack_type: VALUE gave 8 MiB): the check says so.
            rlimits[row] = int(top[key]) * unit
    uid = re.search(r'^uidmap\s*\{[^}]*inside_id:\s*"(\d+)"[^}]*outside_id:\s*"(\d+)"', text, re.M)
    gid = re.search(r'^gidmap\s*\{[^}]*inside_id:\s*"(\d+)"[^}]*outside_id:\s*"(\d+)"', text, re.M)
    writable, tmpfs = set(), {}
    for m in _mounts(text):
        dst = m.get("dst", "") or env.get(m.get("prefix_dst_env", ""), "")
        if not dst or (m.get("mandatory") == "false" and not Path(m.get("src", dst)).exists()):
            continue
        if m.get("rw") == "true":
            writable.add(dst)
        size = re.search(r"size=(\d+)", m.get("options", ""))
        if m.get("fstype") == "tmpfs" and size:
            tmpfs[dst] = int(size.group(1))
    return Promise(
        rlimits=rlimits,
        uid_map=(int(uid.group(1)), int(uid.group(2))) if uid else (-1, -1),
        gid_map=(int(gid.group(1)), int(gid.group(2))) if gid else (-1, -1),
        hostname=top.get("hostname", ""),
        no_interfaces=top.get("clone_newnet") == "true" and top.get("iface_no_lo") == "true",
        writable=frozenset(writable),
        tmpfs_bytes=tmpfs,
        cgroup_cpu_ms_per_sec=int(top.get("cgroup_cpu_ms_per_sec", "0")),
        env_keys=tuple(
            sorted(kv.split("=", 1)[0] for kv in re.findall(r'^envar:\s*"([^"]*)"', text, re.M))
        ),
    )


# --- What a warm build job must set up itself (the zygote's jobs are not started by nsjail) ---


@dataclass(frozen=True)
class JailSettings:
    """The per-job lines of a jail's policy file, as a process that builds the jail itself
    applies them (a warm build job, forked from the zygote, applies build.cfg's)."""

    rlimits: dict[str, int | None]
    """resource module name (`RLIMIT_CPU`) → soft and hard value in the resource's own units
    (None: unlimited), for every `rlimit_*` line the file sets."""
    tmpfs: dict[str, str]
    """Mount point → tmpfs options of the file's tmpfs mounts."""
    cwd: str
    envars: tuple[str, ...]
    """The `envar` lines, in order."""
    cgroup_cpu_ms_per_sec: int
    hostname: str


def jail_settings(policy: Policy, jail: str) -> JailSettings:
    text = policy.config(jail).read_text()
    top = _top_level(text)
    rlimits: dict[str, int | None] = {}
    for key, (_, unit, default_type) in RLIMITS.items():
        kind = top.get(f"{key}_type", default_type if key in top else None)
        if kind == "INF":
            rlimits[f"RLIMIT_{key.removeprefix('rlimit_').upper()}"] = None
        elif key in top and kind == "VALUE":
            rlimits[f"RLIMIT_{key.removeprefix('rlimit_').upper()}"] = int(top[key]) * unit
        elif key in top:
            raise PolicyError(f"{policy.config(jail)}: {key} of type {kind} is not supported")
    tmpfs = {
        m["dst"]: m.get("options", "")
        for m in _mounts(text)
        if m.get("fstype") == "tmpfs" and m.get("dst")
    }
    envars = tuple(re.findall(r'^envar:\s*"([^"]*)"', text, re.M))
    return JailSettings(
        rlimits=rlimits,
        tmpfs=tmpfs,
        cwd=top.get("cwd", "/"),
        envars=envars,
        cgroup_cpu_ms_per_sec=int(top.get("cgroup_cpu_ms_per_sec", "0")),
        hostname=top.get("hostname", ""),
    )


def bind_lines(policy: Policy, jail: str) -> list[str]:
    """The file's bind-mount lines (`mount { ... is_bind: true ... }`), verbatim, in order."""
    return [
        line.split("#")[0].strip()
        for line in policy.config(jail).read_text().splitlines()
        if line.startswith("mount {") and "is_bind: true" in line
    ]

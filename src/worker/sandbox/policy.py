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
        if jail not in JAILS:
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

"""Worker settings, frozen and split by purpose, read once from SIMJAIL_* variables or flags.

- `JobLimits`: what a job may use (time, CPU, memory, caps). Part of the policy: it goes into
  every result's `policy_digest`; a request may only tighten it (`JobLimits.tighten`).
- `Paths`: where the worker keeps its data, artifacts and policy files.
- `StoreSettings`: which artifact store (a local directory or an S3 bucket).
- `Reuse`: what a worker keeps between jobs (the zygote of warm builds, the environment cache).
- `Settings`: the groups plus the sandbox (nsjail, or the unsafe development launcher).

Every field has one flat name, its environment variable without the `SIMJAIL_` prefix
(`SIMJAIL_BUILD_WALL_S` sets `limits.build_wall_s`, `SIMJAIL_STORE` sets `store.kind`), and
`Settings(**flat)` / `Settings.from_flat(...)` accept those names too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.models.simulation import Limits
from worker.errors import InvalidRequest


def examples_dir() -> Path:
    """The examples the demo and the load test submit: SIMJAIL_EXAMPLES_DIR (the container
    image sets it), else the checkout's examples/ (src/worker/ → the project root)."""
    env = os.environ.get("SIMJAIL_EXAMPLES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "examples"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "simjail"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobLimits(_Frozen):
    """Budgets and caps of one job. The sandbox policy files hold the ceilings; these are at
    most those, and a request may lower them further."""

    build_wall_s: float = Field(default=120.0, gt=0)
    """Wall-clock budget of one build child (import build123d alone is 2–5 s)."""
    build_cpu_s: float = Field(default=60.0, gt=0)
    """CPU budget of one build child; below the wall budget, so a busy loop is CPU_LIMIT."""
    physics_wall_s: float = Field(default=600.0, gt=0)
    """Wall-clock budget of the physics child (all runs and rendering)."""
    physics_cpu_s: float = Field(default=1200.0, gt=0)
    """CPU budget of the physics child (the renderer uses two threads)."""
    memory_mb: int = Field(default=2048, gt=0)
    """Memory of one build child (build123d alone is ~450 MB)."""
    physics_memory_mb: int = Field(default=4096, gt=0)
    max_parts: int = Field(default=200, gt=0)
    max_triangles: int = Field(default=200_000, gt=0)
    max_vertices: int = Field(default=400_000, gt=0)
    """Mesh vertices in all (build123d does not weld them: a box has 24 for 12 triangles)."""
    max_output_bytes: int = Field(default=1024 * 1024, gt=0)
    """Per stream (stdout, stderr) of each child; more is OUTPUT_LIMIT."""
    max_frame_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """No frame from any child is larger; a build child's are capped tighter, by the largest
    geometry the caps above allow (protocol.geometry_caps: ~11.3 MB at the defaults)."""
    max_artifact_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Largest file copied out of the physics jail (the video)."""

    def tighten(self, requested: Limits) -> JobLimits:
        """These limits with the request's applied; a request may only lower them."""
        upd: dict[str, object] = {}
        pairs = [
            ("wall_s", "physics_wall_s"),
            ("build_wall_s", "build_wall_s"),
            ("memory_mb", "memory_mb"),
            ("max_triangles", "max_triangles"),
            ("max_parts", "max_parts"),
        ]
        for req_name, own in pairs:
            v = getattr(requested, req_name)
            if v is None:
                continue
            if v > getattr(self, own):
                raise InvalidRequest(
                    f"options.limits.{req_name}: {v} is above the worker's limit of "
                    f"{getattr(self, own)}; limits can only be tightened"
                )
            upd[own] = v
        if requested.memory_mb is not None:  # one request limit caps both jails
            upd["physics_memory_mb"] = min(requested.memory_mb, self.physics_memory_mb)
        return self.model_copy(update=upd)


class Paths(_Frozen):
    data_dir: Path = Field(default_factory=default_data_dir)
    artifacts_dir: Path | None = None
    """Local artifact store root; defaults to <data_dir>/artifacts."""
    policy_dir: Path | None = None
    """Directory holding sandbox/ and seccomp/ (default: the project root)."""

    @property
    def policy_root(self) -> Path:
        from worker.sandbox.policy import default_root

        return self.policy_dir or default_root()

    @property
    def artifacts_root(self) -> Path:
        return self.artifacts_dir or self.data_dir / "artifacts"


class StoreSettings(_Frozen):
    kind: Literal["local", "s3"] = "local"
    """`local` (a directory, Paths.artifacts_root) or `s3` (the s3_* settings below;
    credentials come from boto3's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE, an instance or task role). Flat name: `store` (SIMJAIL_STORE)."""
    s3_bucket: str | None = None
    """Bucket of the s3 store (required when the store is s3)."""
    s3_prefix: str = ""
    """Prefix of every object key in the bucket (e.g. `simjail/prod`); empty for none."""
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible server (MinIO, Ceph, R2, …); unset (or empty) for AWS."""
    s3_region: str = "us-east-1"
    s3_url_ttl_s: int = Field(default=24 * 3600, gt=0, le=7 * 24 * 3600)
    """Lifetime of the presigned artifact URLs in a result (SigV4 allows at most a week)."""


class Reuse(_Frozen):
    """What a worker reuses across jobs to save their start-up: the zygote that build jobs fork
    from (sandbox/README.md, "The zygote") and the environment cache."""

    warm: bool = True
    """Build jobs fork from a zygote that imported build123d once (`SIMJAIL_WARM=0`: every
    build starts a cold jail of its own and imports it again)."""
    zygote_jobs: int = Field(default=500, gt=0)
    """A zygote is replaced after this many jobs (its running jobs finish first)."""
    zygote_max_age_s: float = Field(default=1800.0, gt=0, le=3600)
    """… or at this age (below sandbox/zygote.cfg's time_limit, so no job is cut short)."""
    zygote_max_growth_mb: int = Field(default=256, gt=0)
    """… or once its own memory grew by this much since it was ready."""
    env_cache_mb: int = Field(default=256, ge=0)
    """Size of the environment cache under the data dir (`<data_dir>/env-cache`); 0: off."""


Sandbox = Literal["nsjail", "unsafe-subprocess"]

_GROUPS: dict[str, type[_Frozen]] = {
    "limits": JobLimits,
    "paths": Paths,
    "store": StoreSettings,
    "reuse": Reuse,
}
_RENAMED = {"store": ("store", "kind")}
"""Flat names that differ from the field's own name."""


def _flat_names() -> dict[str, tuple[str, str]]:
    """Flat name → (group, field) for every grouped field."""
    out = {name: (group, name) for group, m in _GROUPS.items() for name in m.model_fields}
    out.update(_RENAMED)
    return out


class Settings(_Frozen):
    limits: JobLimits = Field(default_factory=JobLimits)
    paths: Paths = Field(default_factory=Paths)
    store: StoreSettings = Field(default_factory=StoreSettings)
    reuse: Reuse = Field(default_factory=Reuse)
    sandbox: Sandbox = "nsjail"
    """`unsafe-subprocess` runs children without any jail: development machines only, never
    chosen automatically, and every job logs a warning."""

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """Accept the flat names (`build_wall_s=8`, `store="s3"`) beside the groups."""
        if not isinstance(data, Mapping):
            return data
        names = _flat_names()
        out: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if key in names and not (key == "store" and not isinstance(value, str)):
                group, field = names[key]
                grouped.setdefault(group, {})[field] = value
            else:
                out[key] = value
        for group, fields in grouped.items():
            base = out.get(group, {})
            if isinstance(base, BaseModel):
                base = base.model_dump()
            out[group] = {**base, **fields}
        return out

    @classmethod
    def from_flat(cls, values: Mapping[str, object]) -> Settings:
        return cls.model_validate(dict(values))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        names = [*_flat_names(), "sandbox"]
        return cls.from_flat(
            {n: env[f"SIMJAIL_{n.upper()}"] for n in names if f"SIMJAIL_{n.upper()}" in env}
        )

    def replace(self, **flat: object) -> Settings:
        """A copy with some flat-named settings changed (validated)."""
        data = self.model_dump()
        names = _flat_names()
        for key, value in flat.items():
            if key in names:
                group, field = names[key]
                data[group][field] = value
            else:
                data[key] = value
        return Settings.model_validate(data)

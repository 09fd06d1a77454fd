"""Worker policy and paths: frozen, read once from the environment (SIMJAIL_*) or flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.models.simulation import Limits, SimulationRequest
from worker.errors import InvalidRequest


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "simjail"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    artifacts_dir: Path | None = None
    """Local artifact store root; defaults to <data_dir>/artifacts."""
    sandbox: Literal["nsjail", "unsafe-subprocess"] = "nsjail"
    """`unsafe-subprocess` runs children without any jail: development machines only, never
    chosen automatically, and every job logs a warning."""
    policy_dir: Path | None = None
    """Directory holding sandbox/ and seccomp/ (default: the project root)."""
    build_wall_s: float = 120.0
    """Wall-clock budget of one build child (import build123d alone is ~2 s)."""
    build_cpu_s: float = 60.0
    """CPU budget of one build child; below the wall budget, so a busy loop is CPU_LIMIT."""
    physics_wall_s: float = 600.0
    """Wall-clock budget of the physics child (all runs and rendering)."""
    physics_cpu_s: float = 1200.0
    """CPU budget of the physics child (the renderer uses two threads)."""
    memory_mb: int = 2048
    """Memory of one build child (build123d alone is ~400 MB)."""
    physics_memory_mb: int = 4096
    max_parts: int = 200
    max_triangles: int = 200_000
    max_output_bytes: int = 1024 * 1024
    """Per stream (stdout, stderr) of each child; more is OUTPUT_LIMIT."""
    max_frame_bytes: int = 64 * 1024 * 1024
    max_artifact_bytes: int = 512 * 1024 * 1024
    """Largest file copied out of the physics jail (the video)."""
    store: Literal["local", "s3"] = "local"
    """Artifact store: `local` (a directory, artifacts_root) or `s3` (the s3_* settings below;
    credentials come from boto3's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE, an instance or task role)."""
    s3_bucket: str | None = None
    """Bucket of the s3 store (required when store is s3)."""
    s3_prefix: str = ""
    """Prefix of every object key in the bucket (e.g. `simjail/prod`); empty for none."""
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible server (MinIO, Ceph, R2, …); unset (or empty) for AWS."""
    s3_region: str = "us-east-1"
    s3_url_ttl_s: int = Field(default=24 * 3600, gt=0, le=7 * 24 * 3600)
    """Lifetime of the presigned artifact URLs in a result (SigV4 allows at most a week)."""

    @property
    def policy_root(self) -> Path:
        from worker.sandbox.policy import default_root

        return self.policy_dir or default_root()

    @property
    def artifacts_root(self) -> Path:
        return self.artifacts_dir or self.data_dir / "artifacts"

    @classmethod
    def from_env(cls) -> Settings:
        kw: dict[str, object] = {}
        for name, _field in cls.model_fields.items():
            v = os.environ.get(f"SIMJAIL_{name.upper()}")
            if v is not None:
                kw[name] = v
        return cls.model_validate(kw)

    def effective(self, request: SimulationRequest) -> Settings:
        """Apply the request's limits, which may only tighten this policy."""
        lim: Limits = request.options.limits
        upd: dict[str, object] = {}
        pairs = [
            ("wall_s", "physics_wall_s"),
            ("build_wall_s", "build_wall_s"),
            ("memory_mb", "memory_mb"),
            ("memory_mb", "physics_memory_mb"),
            ("max_triangles", "max_triangles"),
            ("max_parts", "max_parts"),
        ]
        for req_name, own in pairs:
            v = getattr(lim, req_name)
            if v is None:
                continue
            if own == "physics_memory_mb":  # one request limit caps both jails
                upd[own] = min(v, self.physics_memory_mb)
                continue
            if v > getattr(self, own):
                raise InvalidRequest(
                    f"options.limits.{req_name}: {v} is above the worker's limit of "
                    f"{getattr(self, own)}; limits can only be tightened"
                )
            upd[own] = v
        return self.model_copy(update=upd)

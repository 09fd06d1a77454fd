"""Artifact stores: a local directory, an S3-compatible bucket, and a retrying wrapper (retry.py).

Keys are chosen by the caller (worker.job.publish): `<request id>/…` for `simjail run`,
`<request id>/<workflow run id>/…` for a Temporal execution, so a retried attempt overwrites
its own files and two executions never share any."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.storage.base import ArtifactStore, StorageError, check_key
from worker.storage.local import LocalStore

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = [
    "ArtifactStore",
    "LocalStore",
    "StorageError",
    "check_key",
    "describe_store",
    "make_store",
]


def make_store(settings: Settings) -> ArtifactStore:
    """The store the settings configure: a LocalStore on artifacts_root, or an S3Store.

    Raises StorageError naming the missing setting when store is s3 but no bucket is set."""
    cfg = settings.store
    if cfg.kind == "local":
        return LocalStore(settings.paths.artifacts_root)
    if not cfg.s3_bucket:
        raise StorageError(
            "the s3 artifact store needs a bucket: set s3_bucket (SIMJAIL_S3_BUCKET)"
        )
    from worker.storage.s3 import S3Store  # boto3 is imported only when it is used

    return S3Store(
        cfg.s3_bucket,
        cfg.s3_prefix,
        endpoint_url=cfg.s3_endpoint_url or None,
        region=cfg.s3_region,
        url_ttl_s=cfg.s3_url_ttl_s,
    )


def describe_store(settings: Settings) -> dict[str, str]:
    """Where a worker with these settings stores results (for its start line): the kind and
    the directory, or the bucket, prefix and endpoint. Never a credential."""
    cfg = settings.store
    if cfg.kind == "local":
        return {"kind": "local", "root": str(settings.paths.artifacts_root)}
    return {
        "kind": "s3",
        "bucket": cfg.s3_bucket or "",
        "prefix": cfg.s3_prefix,
        "endpoint": cfg.s3_endpoint_url or "AWS",
        "region": cfg.s3_region,
    }

"""Artifact stores. Keys derive from the request id, so a retried job overwrites its own files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.storage.base import ArtifactStore, StorageError, check_key
from worker.storage.local import LocalStore

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = ["ArtifactStore", "LocalStore", "StorageError", "check_key", "make_store"]


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

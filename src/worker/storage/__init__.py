"""Artifact stores. Keys derive from the request id, so a retried job overwrites its own files."""

from worker.storage.base import ArtifactStore, StorageError
from worker.storage.local import LocalStore

__all__ = ["ArtifactStore", "LocalStore", "StorageError"]

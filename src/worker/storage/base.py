"""The interface every artifact store implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from worker.errors import InfrastructureError


class StorageError(InfrastructureError):
    """The store could not take or give an object. An infrastructure fault: retryable."""


class ArtifactStore(Protocol):
    def put_file(self, key: str, path: Path, content_type: str) -> str:
        """Store the file under `key` (overwriting) and return its URL."""
        ...

    def url(self, key: str) -> str:
        """The URL an object stored under `key` has (or will have)."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (overwriting) and return its URL."""
        ...

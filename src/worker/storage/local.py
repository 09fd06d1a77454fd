"""A directory as artifact store; URLs are file:// URLs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from worker.storage.base import StorageError, check_key


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _target(self, key: str) -> Path:
        return self.root / check_key(key)

    def url(self, key: str) -> str:
        return self._target(key).as_uri()

    def put_file(self, key: str, path: Path, content_type: str) -> str:
        target = self._target(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)  # atomic: a reader never sees half a file
        except OSError as e:
            raise StorageError(f"cannot write {target}: {e}") from e
        return target.as_uri()

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        target = self._target(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as e:
            raise StorageError(f"cannot write {target}: {e}") from e
        return target.as_uri()

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        """A local store has no durable URIs of its own: `file://` sources are read by path."""
        raise StorageError(
            f"no S3 store is configured on this worker (it stores to {self.root}), so it "
            f"cannot read {uri[:200]}"
        )

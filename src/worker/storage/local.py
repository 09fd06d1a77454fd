"""A directory as artifact store; URLs (and lasting URIs) are file:// URLs."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from worker.storage.base import (
    NotSupported,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    check_key,
)


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _target(self, key: str) -> Path:
        return self.root / check_key(key)

    def url(self, key: str) -> str:
        return self._target(key).as_uri()

    def uri(self, key: str) -> str:
        return self._target(key).as_uri()

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """The file's bytes, at most `max_bytes`; never follows a link, never opens a FIFO."""
        target = self._target(key)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(f"there is no {target}") from None
        except OSError as e:
            raise StorageError(f"cannot read {target}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StorageError(f"cannot read {target}: not a regular file")
            if st.st_size > max_bytes:
                raise ObjectTooLarge(
                    f"refusing to read {target}: it is {st.st_size} bytes, more than the "
                    f"{max_bytes} allowed"
                )
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(max_bytes + 1)
        except OSError as e:
            raise StorageError(f"cannot read {target}: {e.strerror}") from e
        finally:
            os.close(fd)
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"refusing to read {target}: it grew past {max_bytes} bytes")
        return data

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
        raise NotSupported(
            f"no S3 store is configured on this worker (it stores to {self.root}), so it "
            f"cannot read {uri[:200]}"
        )

"""The interface every artifact store implements."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from worker.errors import InfrastructureError

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")


class StorageError(InfrastructureError):
    """The store could not take or give an object. An infrastructure fault: retryable."""

    cause = "store"


class ObjectTooLarge(StorageError):
    """The object is larger than the caller allowed: nothing of it was returned."""


class ObjectNotFound(StorageError):
    """There is no such object (or bucket)."""


class NotInStore(StorageError):
    """A URI names an object outside this store (another bucket or prefix, an invalid key)."""


class InvalidKey(StorageError):
    """A key that breaks the key rule (a bug of the caller, never worth retrying)."""


class NotSupported(StorageError):
    """This store cannot do that at all (a local store asked for an s3:// object)."""


PERMANENT_ERRORS: tuple[type[StorageError], ...] = (
    ObjectTooLarge,
    ObjectNotFound,
    NotInStore,
    InvalidKey,
    NotSupported,
)
"""Store errors that trying again cannot change; every other StorageError may be transient."""


def check_key(key: str) -> str:
    """Return `key` if it is a valid artifact key, else raise StorageError.

    A key is relative, `/`-separated segments of `[A-Za-z0-9_.-]` that each start with a letter
    or digit (no empty, hidden, `.` or `..` segment), so it cannot leave a store's root or prefix.
    Every store applies this same rule."""
    # fullmatch, not match with `$`: `$` also matches before a trailing newline ("r/x\n").
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise InvalidKey(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    def put_file(self, key: str, path: Path, content_type: str) -> str:
        """Store the file under `key` (overwriting) and return its URL."""
        ...

    def url(self, key: str) -> str:
        """The URL to open the object stored under `key` with (presigned and expiring for
        S3)."""
        ...

    def uri(self, key: str) -> str:
        """The lasting reference of the object under `key` (`s3://bucket/prefix/key`, or the
        file:// URL of a local store): it never expires, and `read_uri` reads it back."""
        ...

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """The bytes stored under `key`, at most `max_bytes`. Raises ObjectNotFound,
        ObjectTooLarge (refused before reading) or StorageError (unreachable)."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (overwriting) and return its URL."""
        ...

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        """The bytes of the object a durable URI (`s3://bucket/prefix/key`) names, at most
        `max_bytes`. Raises NotInStore (it is not this store's), ObjectNotFound,
        ObjectTooLarge (refused before downloading), or StorageError (unreachable, or this
        store reads no such URIs)."""
        ...

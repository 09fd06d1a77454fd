"""A request's sources, read and capped before any child starts: inline code or STEP bytes as
they are, `file://` paths from this machine, `s3://` objects of the caller's store only.

Anything wrong with a source is the request's fault (InvalidRequest naming the field); a store
that cannot be reached is an infrastructure fault (retryable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from common.models.simulation import MAX_CODE_BYTES, MAX_STEP_BYTES, CadSource
from worker.errors import InfrastructureError, InvalidRequest
from worker.storage.base import (
    ArtifactStore,
    NotInStore,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
)

MAX_URI_STEP_BYTES = 64 * MAX_STEP_BYTES
"""Largest STEP file read from a `uri` (64 MiB): inline STEP data is capped at MAX_STEP_BYTES,
and the contract sends larger files through the store."""

SourceKind = Literal["design", "environment"]


@dataclass(frozen=True)
class Source:
    """Exactly one of `code` (build123d Python) or `step` (a STEP file's bytes)."""

    kind: SourceKind
    code: str | None = None
    step: bytes | None = None

    @property
    def filename(self) -> str:
        """What the user's messages call it: design.py, environment.step."""
        return f"{self.kind}.py" if self.code is not None else f"{self.kind}.step"


def read_source(src: CadSource, kind: SourceKind, store: ArtifactStore) -> Source:
    """The source `src` names; `s3://` URIs are read from `store` only."""
    if src.code is not None:
        return Source(kind, code=src.code)
    if src.step is not None:
        return Source(kind, step=src.step)
    assert src.uri is not None
    u = urlparse(src.uri)
    step = unquote(u.path).lower().endswith((".step", ".stp"))
    cap = MAX_URI_STEP_BYTES if step else MAX_CODE_BYTES
    if u.scheme == "file":
        data = _read_file(Path(unquote(u.path)), kind, src.uri, cap)
    elif u.scheme == "s3":
        try:
            data = store.read_uri(src.uri, cap)
        except (NotInStore, ObjectNotFound, ObjectTooLarge) as e:
            raise InvalidRequest(f"{kind}.uri: {e.message}") from None
        except StorageError as e:
            raise InfrastructureError(f"{kind}.uri: {e.message}", cause="store") from None
    else:  # the contract allows only file:// and s3://
        raise InfrastructureError(f"{kind}.uri: no store is configured for {u.scheme}:// URLs")
    if step:
        return Source(kind, step=data)
    try:
        return Source(kind, code=CadSource(code=data.decode("utf-8")).code)
    except (UnicodeDecodeError, ValidationError) as e:
        raise InvalidRequest(
            f"{kind}.uri: {src.uri} is not a UTF-8 source under the size cap: {e}"
        ) from None


def _read_file(path: Path, kind: str, uri: str, cap: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise InvalidRequest(f"{kind}.uri: cannot read {path}: {e.strerror}") from None
    if len(data) > cap:
        raise InvalidRequest(f"{kind}.uri: {uri} is larger than {cap} bytes")
    return data

"""The environment built once per task, not once per attempt.

A task's environment (its fixtures) is the same source in every attempt an agent makes, so its
geometry is kept under `<data dir>/env-cache/<key>.json`, keyed by the sha256 of the source's
bytes (code or STEP) and its file name, and of what else decides the geometry: the simjail and
build123d versions, the policy digest (the policy files, the launcher, every limit and cap) and
the request's tessellation (how finely the build meshes the solids).
A repeated environment then starts no build jail; a changed byte of any of these misses.

An entry is the body of the result frame the environment's build jail sent, exactly as
`protocol` read it, and reading it back is reading a jail's output again: at most the frame cap
of the job's geometry caps, no link followed, parsed and validated by `protocol` as a fresh
build result (and the merged geometry by `validate_geometry` after that, as always). An entry
that fails any of it is removed and the environment is built. Only a successful build is kept.
The directory is bounded: after each write the least recently used entries go until it fits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

import structlog

from worker.job.sources import Source
from worker.sandbox.hostio import UnsafeOutput, read_capped
from worker.sandbox.protocol import (
    FrameCaps,
    ProtocolError,
    ResultFrame,
    build_result,
    encode,
    parse,
)
from worker.simulation.geometry import Geometry

log = structlog.get_logger("simjail.envcache")

FORMAT = b"simjail-env-cache/2"  # /2: the key names the tessellation


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


class EnvCache:
    """Environment geometry by content key, under `root`, at most `max_bytes` in all."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def key(self, source: Source, policy_digest: str, tessellation: str | float) -> str:
        h = hashlib.sha256(FORMAT + b"\0")
        for part in (
            _version("simjail"),
            _version("build123d"),
            policy_digest,
            json.dumps(tessellation),  # "normal" and 0.5 never meet
            source.filename,
        ):
            h.update(part.encode() + b"\0")
        h.update(source.code.encode() if source.code is not None else source.step or b"")
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key[:80]!r}")
        return self.root / f"{key}.json"

    def get(self, key: str, caps: FrameCaps) -> Geometry | None:
        """The cached geometry of `key`, validated as a build result; None on a miss (or an
        entry that fails validation, which is removed)."""
        path = self._path(key)
        try:
            body = read_capped(path, caps.frame_bytes)
        except FileNotFoundError:
            return None
        except (UnsafeOutput, OSError) as e:
            log.warning("env_cache.refused", key=key[:16], reason=str(e)[:200])
            self._drop(path)
            return None
        try:
            frame = parse(body, caps.values)
            if not isinstance(frame, ResultFrame):
                raise ProtocolError(f"a {frame.type} frame, not a result")
            geom = build_result(frame, "environment")
        except ProtocolError as e:
            log.warning("env_cache.refused", key=key[:16], reason=str(e)[:200])
            self._drop(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return geom

    def put(self, key: str, geom: Geometry) -> None:
        """Keep `geom` (an environment's validated build result) under `key`, atomically."""
        body = encode(ResultFrame(payload=geom.model_dump(mode="json")))[4:]
        if len(body) > self.max_bytes:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(tmp, self._path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._evict()

    def _evict(self) -> None:
        entries = []
        for p in self.root.glob("*.json"):
            with contextlib.suppress(OSError):
                st = p.stat()
                entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            self._drop(p)
            total -= size

    @staticmethod
    def _drop(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.json") if p.is_file())

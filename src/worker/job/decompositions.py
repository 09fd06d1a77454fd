"""The cache of convex decompositions, kept by the supervisor under the worker's data dir.

CoACD runs in the physics jail (trusted code, but C++ parsing a mesh the design shaped), so
what it returns, and what an earlier job stored, is checked against the solid's own mesh
(`collision.check_pieces`: caps, bounds, volume, each piece inside the solid) both when it is
stored and when it is read: one job cannot poison the collisions of another. Keys are the
mesh's content hash with CoACD's version and settings (`collision.decomposition_key`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import structlog

from worker.simulation.collision import check_pieces, decomposition_key
from worker.simulation.geometry import ConvexPieces, Geometry, Mesh

log = structlog.get_logger("simjail.decompositions")

_KEY = re.compile(r"^[0-9a-f]{64}$")
MAX_ENTRY_BYTES = 16 * 2**20


class DecompositionCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _solids(self, geom: Geometry) -> dict[str, Mesh]:
        return {
            decomposition_key(m): m for p in geom.parts for m in p.solids if m.primitive is None
        }

    def lookup(self, geom: Geometry) -> dict[str, ConvexPieces]:
        """The cached decompositions of `geom`'s solids that still pass the checks."""
        out: dict[str, ConvexPieces] = {}
        for key, mesh in self._solids(geom).items():
            path = self.root / f"{key}.json"
            try:
                with open(path, "rb", opener=_nofollow) as f:
                    raw = f.read(MAX_ENTRY_BYTES + 1)
            except OSError:
                continue
            pieces = self._checked(raw, mesh) if len(raw) <= MAX_ENTRY_BYTES else None
            if pieces is None:
                log.warning("decomposition.refused", key=key, where="cache")
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            out[key] = pieces
        return out

    def store(self, geom: Geometry, computed: dict[str, ConvexPieces]) -> int:
        """Keep what the physics child computed for this geometry's solids; returns how many."""
        solids = self._solids(geom)
        kept = 0
        for key, pieces in computed.items():
            mesh = solids.get(key)
            if not _KEY.match(key) or mesh is None:
                continue
            v, t = mesh.arrays()
            if check_pieces(pieces, v, t) is None:
                log.warning("decomposition.refused", key=key, where="physics")
                continue
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            with os.fdopen(fd, "w") as f:
                f.write(pieces.model_dump_json())
            os.replace(tmp, self.root / f"{key}.json")
            kept += 1
        return kept

    @staticmethod
    def _checked(raw: bytes, mesh: Mesh) -> ConvexPieces | None:
        try:
            pieces = ConvexPieces.model_validate_json(raw)
        except ValueError:
            return None
        v, t = mesh.arrays()
        return pieces if check_pieces(pieces, v, t) is not None else None


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)

"""The CoACD child: run by `collision.run_coacd` as its own process inside the physics jail,
so a decomposition that runs past its budget can be killed (CoACD has no time limit) and a
crash in CoACD's C++ ends only this process.

stdin: two lines, ConvexPieces JSON of the welded vertices, then of the triangle indices (as
float32 triples). stdout: ConvexPieces JSON of the pieces. Exit status 1 when CoACD failed.
"""

from __future__ import annotations

import sys

import numpy as np

from worker.simulation.collision import COACD_PARAMS
from worker.simulation.geometry import ConvexPieces


def main() -> None:
    import coacd

    lines = sys.stdin.buffer.read().split(b"\n")
    (v,) = ConvexPieces.model_validate_json(lines[0]).arrays()
    (t,) = ConvexPieces.model_validate_json(lines[1]).arrays()
    coacd.set_log_level("error")
    mesh = coacd.Mesh(v, t.astype(np.int32))
    parts = coacd.run_coacd(mesh, **COACD_PARAMS)
    if not parts:
        sys.exit(1)
    sys.stdout.write(ConvexPieces.from_arrays([p[0] for p in parts]).model_dump_json())


if __name__ == "__main__":
    main()

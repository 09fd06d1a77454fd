"""Runs inside the physics child (jail): trusted code on untrusted, already validated data.

Reads geometry, objectives and options, runs the physics job, writes its files into the working
directory and reports progress frames and one result frame:
`{"status": "ok", "failure", "reason", "metrics", "files"}` or
`{"status": "infra", "message"}` for faults that are not the design's (rendering unavailable).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from worker.sandbox.child import exit_now, parse_args
from worker.sandbox.child import send as _send


def run(job: dict[str, Any], chan: BinaryIO, out_dir: Path) -> dict[str, Any]:
    from common.models.simulation import Objectives, SimOptions
    from worker.simulation.builder import ModelBuildError
    from worker.simulation.geometry import Geometry
    from worker.simulation.loop import Progress, SimulationTimeout
    from worker.simulation.physics import run_physics
    from worker.simulation.render import RenderError

    geom = Geometry.model_validate(job["geometry"])
    objectives = Objectives.model_validate(job["objectives"])
    options = SimOptions.model_validate(job["options"])
    deadline = time.monotonic() + float(job["wall_s"])

    def progress(p: Progress) -> None:
        _send(
            chan,
            {
                "type": "progress",
                "phase": p.phase,
                "sim_time_s": p.sim_time_s,
                "fraction": p.fraction,
            },
        )

    try:
        o = run_physics(
            geom, objectives, options, out_dir, on_progress=progress, wall_deadline=deadline
        )
    except ModelBuildError as e:
        return {"status": "ok", "failure": "INVALID_GEOMETRY", "reason": str(e), "metrics": {}}
    except SimulationTimeout as e:
        return {"status": "ok", "failure": "TIMEOUT", "reason": f"Timeout: {e}.", "metrics": {}}
    except RenderError as e:
        return {"status": "infra", "message": str(e)}
    except ValueError as e:  # controls that name no actuator of this design
        return {"status": "ok", "failure": "INVALID_GEOMETRY", "reason": str(e), "metrics": {}}
    return {
        "status": "ok",
        "failure": o.failure.value if o.failure else None,
        "reason": o.reason,
        "metrics": o.metrics,
        "files": o.files,
    }


def main() -> None:
    args = parse_args()  # --out: the directory the video and model go to
    job = args.job()
    chan = args.channel()
    try:
        payload = run(job, chan, args.out)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        # Our code failed on this input: retrying cannot help, so it is a FAIL, not a fault.
        payload = {
            "status": "ok",
            "failure": "CRASHED",
            "reason": f"The physics step failed: {type(e).__name__}: {str(e)[:500]}",
            "metrics": {},
        }
    _send(chan, {"type": "result", "payload": payload})
    chan.close()
    exit_now()


if __name__ == "__main__":
    main()

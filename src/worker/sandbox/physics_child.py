"""Runs inside the physics child (jail): trusted code on untrusted, already validated data.

Reads its PhysicsJob, runs `physics.judge` (the one place that turns what the physics raises
into an outcome), writes its files into the writable directory and reports progress frames and
one result frame: a PhysicsPayload with status "ok" (a verdict) or "infra" (a fault that is not
the design's, e.g. rendering unavailable).
"""

from __future__ import annotations

import time
from typing import BinaryIO

from worker.errors import InfrastructureError
from worker.progress import Progress
from worker.sandbox.child import ChildArgs, exit_now, parse_args, send
from worker.sandbox.protocol import PhysicsJob, PhysicsPayload, ProgressFrame, ResultFrame


def run(job: PhysicsJob, chan: BinaryIO, args: ChildArgs) -> PhysicsPayload:
    from worker.simulation.physics import judge

    def progress(p: Progress) -> None:
        send(chan, ProgressFrame(type="progress", phase=p.phase, sim_time_s=p.sim_time_s,
                                 fraction=p.fraction))  # fmt: skip

    try:
        o = judge(
            job.geometry,
            job.objectives,
            job.options,
            args.out,
            on_progress=progress,
            wall_deadline=time.monotonic() + job.wall_s,
            decompositions=job.decompositions,
        )
    except InfrastructureError as e:
        return PhysicsPayload(status="infra", message=e.message[:4000])
    return PhysicsPayload(
        status="ok",
        failure=o.failure.kind if o.failure else None,
        reason=o.reason[:4000],
        metrics=o.metrics,
        files=o.files,
        decompositions=o.decompositions,
    )


def main() -> None:
    args = parse_args()  # --out: the directory the video and model go to
    job = PhysicsJob.read(args.job_path)
    chan = args.channel()
    payload = run(job, chan, args)
    send(chan, ResultFrame(payload=payload.model_dump(mode="json")))
    chan.close()
    exit_now()


if __name__ == "__main__":
    main()

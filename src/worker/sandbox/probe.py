"""Start a real jail running `worker.sandbox.probe_child` and report what it saw: used by
`simjail policy check` and, for the physics jail (which must render offscreen), at worker start,
so a machine where rendering cannot work refuses to serve instead of failing every job."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from worker.errors import InfrastructureError
from worker.owners import mark_owner
from worker.sandbox.launcher import Launcher, LaunchSpec
from worker.sandbox.protocol import ProbeJob
from worker.sandbox.supervisor import LaunchError, classify, run_child

JAIL_UID = 65534


class ProbeFailed(InfrastructureError):
    """A probe jail did not start, did not run as the jail's user, or could not render."""

    cause = "sandbox"


def probe(launcher: Launcher, jail: str) -> dict[str, Any]:
    """What the probe child saw in a `jail` jail (`wall_s` added). The physics probe renders a
    frame. Raises ProbeFailed with the reason and the child's last output."""
    with tempfile.TemporaryDirectory(prefix="simjail-probe-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)
        mark_owner(root)  # removed by the next worker if this one is killed mid-probe
        job = root / jail
        job.mkdir()
        job.chmod(0o755)
        render = jail == "physics"
        ProbeJob(render=render).write(job / "job.json")
        out = root / f"{jail}-out"
        out.mkdir()
        spec = LaunchSpec(
            name=f"{jail} probe",
            jail=jail,
            module="worker.sandbox.probe_child",
            job_dir=job,
            wall_s=60,
            cpu_s=60,
            memory_mb=1024,
            out_dir=out if render else None,
        )
        t = time.monotonic()
        try:
            res = run_child(launcher, spec)
        except LaunchError as e:
            raise ProbeFailed(f"the {jail} jail did not start: {e}") from None
        failed = classify(res)
        seen = dict(res.result.payload) if res.result else {}
        problem = None
        if failed is not None:
            problem = failed.reason
        elif launcher.name == "nsjail" and seen.get("uid") != JAIL_UID:
            problem = f"the jail runs as uid {seen.get('uid')}, not {JAIL_UID}"
        elif render and "rendered_mean" not in seen:
            problem = "it rendered nothing"
        if problem is not None:
            tail = res.stderr.strip()[-2000:]
            raise ProbeFailed(
                f"the {jail} jail probe failed: {problem}" + (f"\n{tail}" if tail else "")
            )
        seen["wall_s"] = round(time.monotonic() - t, 3)
        return seen

"""simulate_local: the physics pipeline in this process, for an already-built build123d object.

For notebooks and tests that hold a Compound (trusted code: nothing here is sandboxed).
Untrusted source code goes through `worker.pipeline.run_request` instead. The verdict comes from
the same `physics.judge` the physics jail runs, so a design fails here exactly as it would there.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.models.simulation import Objectives, SimOptions, SimulationResult
from worker.errors import Failed
from worker.job.publish import artifact_prefix, publish
from worker.owners import mark_owner
from worker.progress import ProgressFn
from worker.settings import Settings
from worker.simulation.cad import extract_geometry
from worker.simulation.geometry import validate_geometry
from worker.simulation.physics import PhysicsOutcome, judge
from worker.storage.base import ArtifactStore
from worker.storage.local import LocalStore


def simulate_local(
    component: Any,
    options: SimOptions | None = None,
    objectives: Objectives | None = None,
    *,
    parts: Mapping[str, Any] | None = None,
    store: ArtifactStore | None = None,
    request_id: str | None = None,
    on_progress: ProgressFn | None = None,
    wall_s: float | None = None,
) -> SimulationResult:
    """Build the MuJoCo scene from `component` (Shape, Compound, builder or list), simulate,
    render and store. `parts` is the per-part metadata (the `PARTS` dict of a design)."""
    options = options or SimOptions()
    objectives = objectives or Objectives()
    settings = Settings.from_env()
    store = store or LocalStore(settings.paths.artifacts_root)
    request_id = request_id or f"local-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="simjail-local-"))
    mark_owner(workdir)
    out_dir = workdir / "physics"
    out_dir.mkdir()
    phases: dict[str, float] = {}
    geometry: Path | None = None
    try:
        t = time.monotonic()
        try:
            geom = extract_geometry(component, parts, tessellation=options.tessellation)
            phases["build"] = time.monotonic() - t
            limits = settings.limits
            validate_geometry(
                geom,
                max_parts=limits.max_parts,
                max_triangles=limits.max_triangles,
                max_vertices=limits.max_vertices,
                tessellation=options.tessellation,
            )
            geometry = workdir / "geometry.json"
            geometry.write_text(geom.model_dump_json())
            outcome = judge(
                geom,
                objectives,
                options,
                out_dir,
                on_progress=on_progress,
                wall_deadline=None if wall_s is None else time.monotonic() + wall_s,
            )
        except Failed as f:  # the geometry was refused before the physics
            outcome = PhysicsOutcome(failure=f.failure, reason=f.reason, metrics={})
        phases.update(outcome.metrics.get("phases_s", {}))
        return publish(
            request_id=request_id,
            prefix=artifact_prefix(request_id),
            store=store,
            files_dir=out_dir,
            failure=outcome.failure,
            reason=outcome.reason,
            metrics=outcome.metrics,
            files=outcome.files,
            phases=phases,
            started=started,
            digest="in-process",
            geometry=geometry,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

"""simulate_local: the physics pipeline in this process, for an already-built build123d object.

For notebooks and tests that hold a Compound (trusted code: nothing here is sandboxed).
Untrusted source code goes through `worker.pipeline.run_request` instead.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.models.simulation import FailureKind, Objectives, SimOptions, SimulationResult
from worker.pipeline import publish
from worker.settings import Settings
from worker.simulation.builder import ModelBuildError
from worker.simulation.cad import extract_geometry
from worker.simulation.geometry import GeometryError, validate_geometry
from worker.simulation.loop import ProgressFn, SimulationTimeout
from worker.simulation.physics import run_physics
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
    store = store or LocalStore(settings.artifacts_root)
    request_id = request_id or f"local-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="simjail-local-"))
    out_dir = workdir / "physics"
    out_dir.mkdir()
    phases: dict[str, float] = {}
    try:
        t = time.monotonic()
        geom = extract_geometry(component, parts)
        phases["build"] = time.monotonic() - t
        try:
            validate_geometry(
                geom, max_parts=settings.max_parts, max_triangles=settings.max_triangles
            )
            (workdir / "geometry.json").write_text(geom.model_dump_json())
            outcome = run_physics(
                geom,
                objectives,
                options,
                out_dir,
                on_progress=on_progress,
                wall_deadline=None if wall_s is None else time.monotonic() + wall_s,
            )
        except GeometryError as e:
            return _fail(
                request_id, store, out_dir, FailureKind(e.kind), e.message, phases, started
            )
        except ModelBuildError as e:
            return _fail(
                request_id, store, out_dir, FailureKind.INVALID_GEOMETRY, str(e), phases, started
            )
        except SimulationTimeout as e:
            return _fail(request_id, store, out_dir, FailureKind.TIMEOUT, str(e), phases, started)
        phases.update(outcome.metrics.get("phases_s", {}))
        return publish(
            request_id=request_id,
            store=store,
            files_dir=out_dir,
            failure=outcome.failure,
            reason=outcome.reason,
            metrics=outcome.metrics,
            files=outcome.files,
            phases=phases,
            started=started,
            digest="in-process",
            geometry=workdir / "geometry.json",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fail(
    request_id: str,
    store: ArtifactStore,
    out_dir: Path,
    kind: FailureKind,
    reason: str,
    phases: dict[str, float],
    started: float,
) -> SimulationResult:
    return publish(
        request_id=request_id,
        store=store,
        files_dir=out_dir,
        failure=kind,
        reason=reason,
        metrics={},
        files={},
        phases=phases,
        started=started,
        digest="in-process",
    )

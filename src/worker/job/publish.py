"""What a job leaves: its files copied safely out of the physics jail, its artifacts in the
store, the report, and the SimulationResult that points at them.

Keys are `<request_id>/<name>`, so a retried attempt overwrites instead of duplicating.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from common.models.simulation import SimulationResult
from worker.errors import MAX_REASON_CHARS, Failure
from worker.sandbox.hostio import UnsafeOutput, copy_out
from worker.simulation.report import report_markdown
from worker.storage.base import ArtifactStore
from worker.text import printable

log = structlog.get_logger("simjail.publish")

ARTIFACT_NAMES = {"video": "video.mp4", "poster": "poster.png", "mjcf": "model.xml"}
"""Files the physics job produces, by artifact name → stored file name."""

CONTENT_TYPES = {
    "video": "video/mp4",
    "poster": "image/png",
    "mjcf": "application/xml",
    "report": "text/markdown",
    "geometry": "application/json",
    "logs": "text/plain",
    "result": "application/json",
}


def versions() -> dict[str, str]:
    out = {}
    for key, dist in (
        ("simjail", "simjail"),
        ("mujoco", "mujoco-core"),
        ("build123d", "build123d"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "unknown"
    return out


def collect(src: Path, dest: Path, files: Mapping[str, str], max_bytes: int) -> dict[str, str]:
    """Copy the physics jail's files (artifact name → its file name in `src`) into `dest`,
    safely (hostio: no links followed, no FIFOs, regular files under the cap). Returns artifact
    name → file name in `dest` for the files that were accepted."""
    got: dict[str, str] = {}
    for name, fname in files.items():
        target = ARTIFACT_NAMES[name]
        try:
            copy_out(src, fname, dest / target, max_bytes)
        except UnsafeOutput as e:
            log.warning("artifact.refused", artifact=name, reason=str(e))
            continue
        got[name] = target
    return got


METRIC_DEFAULTS: dict[str, Any] = {
    "sim_time_s": 0.0,
    "steps": 0,
    "parts": {},
    "goal": None,
    "energy_j": None,
    "max_contact_force_n": 0.0,
    "runs": [],
}
"""Every result has these metrics, also a FAIL that never reached the physics."""


def publish(
    *,
    request_id: str,
    store: ArtifactStore,
    files_dir: Path,
    failure: Failure | None,
    reason: str,
    metrics: dict[str, Any],
    files: Mapping[str, str],
    phases: Mapping[str, float],
    started: float,
    geometry: Path | None = None,
    resources: dict[str, dict[str, float]] | None = None,
    logs: str | None = None,
    digest: str = "",
) -> SimulationResult:
    """Upload the files, write the report, and assemble the SimulationResult."""
    t = time.monotonic()
    urls: dict[str, str] = {}
    for name, fname in files.items():
        path = files_dir / fname
        if name in ARTIFACT_NAMES and path.is_file() and not path.is_symlink():
            key = f"{request_id}/{ARTIFACT_NAMES[name]}"
            urls[name] = store.put_file(key, path, CONTENT_TYPES[name])
    if geometry is not None and geometry.is_file():
        urls["geometry"] = store.put_file(
            f"{request_id}/geometry.json", geometry, CONTENT_TYPES["geometry"]
        )
    if logs is not None:
        urls["logs"] = store.put_bytes(
            f"{request_id}/logs.txt", logs.encode("utf-8", "replace"), CONTENT_TYPES["logs"]
        )
    urls["report"] = store.url(f"{request_id}/report.md")
    metrics = {**METRIC_DEFAULTS, **metrics, "resources": resources or {}}
    rounded = {k: round(v, 4) for k, v in phases.items()}
    for key in ("build", "compile", "simulate", "render"):
        rounded.setdefault(key, 0.0)
    rounded["store"] = round(time.monotonic() - t, 4)
    metrics["phases_s"] = rounded
    metrics["wall_time_s"] = round(time.monotonic() - started, 3)
    if "real_time_factor" not in metrics:
        sim_wall = rounded["simulate"] + rounded["render"]
        metrics["real_time_factor"] = metrics["sim_time_s"] / sim_wall if sim_wall else 0.0
    result = SimulationResult(
        outcome="SUCCESS" if failure is None else "FAIL",
        reason=printable(failure.reason if failure is not None else reason)[:MAX_REASON_CHARS],
        failure=failure.kind if failure is not None else None,
        video_url=urls.get("video"),
        metrics=metrics,
        artifact_urls=urls,
        policy_digest=digest,
        versions=versions(),
    )
    report = report_markdown(result.model_dump(mode="json"), request_id)
    store.put_bytes(f"{request_id}/report.md", report.encode(), CONTENT_TYPES["report"])
    store.put_bytes(
        f"{request_id}/result.json",
        result.model_dump_json(indent=2).encode(),
        CONTENT_TYPES["result"],
    )
    return result

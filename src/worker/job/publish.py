"""What a job leaves: its files copied safely out of the physics jail, its artifacts in the
store, the reports (report.md, report.html), and the SimulationResult that points at them.

Keys are `<prefix>/<file name>`, the prefix from `artifact_prefix`: `<request_id>` for
`simjail run` (running the same thing again overwrites its own files), and
`<request_id>/<workflow run id>` for a Temporal execution, so two executions never share a
key (even with the same request id) while a retried attempt of one execution overwrites its
own files. `result.json` is written last: once it is there, every other artifact is, and
`stored_result` hands it back to a retried attempt instead of running the job again. Each file
from the jail is copied under its own cap (`ARTIFACT_CAPS`, else JobLimits.max_artifact_bytes).
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
from worker.simulation.report import VIDEO_EMBED_MAX_BYTES, Media, report_html, report_markdown
from worker.storage.base import ArtifactStore, ObjectNotFound, check_key
from worker.text import printable

log = structlog.get_logger("simjail.publish")

ARTIFACT_NAMES = {
    "video": "video.mp4",
    "poster": "poster.png",
    "last_frame": "last.png",
    "contact_sheet": "contact.png",
    "plots": "plots.svg",
    "mjcf": "model.xml",
}
"""Files the physics job produces, by artifact name → stored file name."""
STORED_NAMES = {
    **ARTIFACT_NAMES,
    "geometry": "geometry.json",
    "logs": "logs.txt",
    "report": "report.md",
    "report_html": "report.html",
    "result": "result.json",
}
"""Every artifact a job may store, by artifact name → file name under the job's prefix."""
MAX_RESULT_BYTES = 4 * 1024 * 1024
"""Largest result.json read back (a result is a few KiB)."""

MAX_IMAGE_BYTES = 16 * 1024 * 1024
"""A PNG from the jail (poster, last frame, contact sheet): 1920 × 1080 RGB is 6.2 MB raw."""
MAX_PLOTS_BYTES = 4 * 1024 * 1024
"""plots.svg: at most 600 points per line, 8 lines per plot, 6 plots (~0.2 MB)."""
ARTIFACT_CAPS = {
    "poster": MAX_IMAGE_BYTES,
    "last_frame": MAX_IMAGE_BYTES,
    "contact_sheet": MAX_IMAGE_BYTES,
    "plots": MAX_PLOTS_BYTES,
}
"""Largest file accepted per artifact; the video and the MJCF are capped by
JobLimits.max_artifact_bytes (512 MiB by default). A file over its cap is left out."""

CONTENT_TYPES = {
    "video": "video/mp4",
    "poster": "image/png",
    "last_frame": "image/png",
    "contact_sheet": "image/png",
    "plots": "image/svg+xml",
    "mjcf": "application/xml",
    "report": "text/markdown; charset=utf-8",
    "report_html": "text/html; charset=utf-8",
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
            copy_out(src, fname, dest / target, min(max_bytes, ARTIFACT_CAPS.get(name, max_bytes)))
        except UnsafeOutput as e:
            log.warning("artifact.refused", artifact=name, reason=str(e))
            continue
        got[name] = target
    return got


def _media(files_dir: Path, files: Mapping[str, str]) -> Media:
    """What report.html embeds, read back from the accepted copies (each within its cap)."""

    def read(name: str, cap: int) -> bytes | None:
        fname = files.get(name)
        if fname is None:
            return None
        path = files_dir / fname
        if path.is_symlink() or not path.is_file() or path.stat().st_size > cap:
            return None
        return path.read_bytes()

    return Media(
        poster=read("poster", MAX_IMAGE_BYTES),
        contact_sheet=read("contact_sheet", MAX_IMAGE_BYTES),
        plots=read("plots", MAX_PLOTS_BYTES),
        video=read("video", VIDEO_EMBED_MAX_BYTES),
    )


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


def artifact_prefix(request_id: str, execution: str | None = None) -> str:
    """The key prefix of a job's artifacts: `<request_id>`, or `<request_id>/<execution>` for
    one execution of a workflow (its run id)."""
    return check_key(request_id if execution is None else f"{request_id}/{execution}")


def stored_result(store: ArtifactStore, prefix: str) -> SimulationResult | None:
    """The result a finished attempt stored under `prefix`, with freshly signed URLs, or None
    when there is none (or it does not validate: the job then runs again and overwrites it).
    StorageError when the store cannot say."""
    try:
        data = store.get_bytes(f"{prefix}/{STORED_NAMES['result']}", MAX_RESULT_BYTES)
    except ObjectNotFound:
        return None
    try:
        result = SimulationResult.model_validate_json(data)
    except ValueError as e:
        log.warning("result.stored_invalid", prefix=prefix, error=str(e)[:300])
        return None
    urls = {
        name: store.url(f"{prefix}/{STORED_NAMES[name]}")
        for name in result.artifact_urls
        if name in STORED_NAMES
    }
    return result.model_copy(update={"artifact_urls": urls, "video_url": urls.get("video")})


def publish(
    *,
    request_id: str,
    prefix: str,
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
    """Upload the files, write the report, and assemble the SimulationResult; result.json
    last."""
    t = time.monotonic()
    urls: dict[str, str] = {}
    uris: dict[str, str] = {}

    def key(name: str) -> str:
        k = f"{prefix}/{STORED_NAMES[name]}"
        uris[name] = store.uri(k)
        return k

    for name, fname in files.items():
        path = files_dir / fname
        if name in ARTIFACT_NAMES and path.is_file() and not path.is_symlink():
            urls[name] = store.put_file(key(name), path, CONTENT_TYPES[name])
    if geometry is not None and geometry.is_file():
        urls["geometry"] = store.put_file(key("geometry"), geometry, CONTENT_TYPES["geometry"])
    if logs is not None:
        urls["logs"] = store.put_bytes(
            key("logs"), logs.encode("utf-8", "replace"), CONTENT_TYPES["logs"]
        )
    urls["report"] = store.url(key("report"))
    urls["report_html"] = store.url(key("report_html"))
    urls["result"] = store.url(key("result"))
    metrics = {**METRIC_DEFAULTS, **metrics, "resources": resources or {}}
    rounded = {k: round(v, 4) for k, v in phases.items()}
    for phase in ("build", "compile", "simulate", "render"):
        rounded.setdefault(phase, 0.0)
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
        artifact_uris=uris,
        policy_digest=digest,
        versions=versions(),
    )
    dumped = result.model_dump(mode="json")
    report = report_markdown(dumped, request_id)
    store.put_bytes(f"{prefix}/report.md", report.encode(), CONTENT_TYPES["report"])
    page = report_html(dumped, request_id, _media(files_dir, files))
    store.put_bytes(f"{prefix}/report.html", page.encode(), CONTENT_TYPES["report_html"])
    store.put_bytes(
        f"{prefix}/result.json", result.model_dump_json(indent=2).encode(), CONTENT_TYPES["result"]
    )
    return result

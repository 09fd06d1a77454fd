"""A SimulationRequest end to end: build children → geometry checks → physics child → artifacts.

Trusted code in the worker's process. The agent's code only ever runs in a build child; the
verdict comes from the physics child, which never ran it. `run_request` reads top to bottom; each
concern lives in its own module of `worker.job` (the directory, the sources, the children, what
is published). Everything the submitted code caused is raised as `Failed` and becomes a FAIL
result in one place, `run_request`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from common.models.simulation import FailureKind, SimulationRequest, SimulationResult
from worker import metrics
from worker.errors import Failed, Failure, InfrastructureError
from worker.job.children import (
    Children,
    build_spec,
    physics_self_stop_s,
    physics_spec,
    policy_digest,
)
from worker.job.decompositions import DecompositionCache
from worker.job.envcache import EnvCache
from worker.job.publish import artifact_prefix, collect, publish
from worker.job.sources import Source, read_source
from worker.job.workdir import JobDir
from worker.progress import Progress, ProgressFn
from worker.sandbox.launcher import Launcher, make_launcher
from worker.sandbox.protocol import (
    BuildJob,
    PhysicsJob,
    PhysicsPayload,
    ProtocolError,
    build_failure,
    build_result,
    physics_result,
)
from worker.sandbox.supervisor import classify
from worker.settings import JobLimits, Settings
from worker.simulation.geometry import Geometry, merge, validate_geometry
from worker.storage.base import ArtifactStore

log = structlog.get_logger("simjail.pipeline")


@dataclass
class Job:
    """What every step of one run shares."""

    request: SimulationRequest
    limits: JobLimits
    dir: JobDir
    children: Children
    cache: DecompositionCache
    digest: str
    """The policy digest that judges this job (and keys its environment in the cache)."""
    env_cache: EnvCache | None = None
    phases: dict[str, float] = field(default_factory=dict)


def run_request(
    request: SimulationRequest,
    settings: Settings,
    store: ArtifactStore,
    *,
    launcher: Launcher | None = None,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    sources: ArtifactStore | None = None,
    prefix: str | None = None,
) -> SimulationResult:
    """Run one request. Returns a FAIL result for everything the submitted code caused; raises
    InvalidRequest (bad request), InfrastructureError (retryable fault) or, once `cancel` was
    set and every child is gone, JobCancelled. `s3://` sources are read from `sources`
    (default: `store`). Artifacts go under `prefix` (default: the request id; see
    `publish.artifact_prefix`). Every log line of the job (also from its build threads) carries the
    request id and the phase, and whatever the caller bound (workflow id, attempt)."""
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(request_id=request.request_id, phase="prepare"):
        # The request is checked before the sandbox is consulted or a directory is made.
        limits = settings.limits.tighten(request.options.limits)
        inputs = [read_source(request.design, "design", sources or store)]
        if request.environment is not None:
            inputs.append(read_source(request.environment, "environment", sources or store))
        with _launcher(launcher, settings) as launcher:
            children = Children(
                launcher, limits, cancel=cancel or threading.Event(), on_progress=on_progress
            )
            with JobDir(request.request_id) as jobdir:
                digest = policy_digest(launcher, limits)
                cache = DecompositionCache(settings.paths.data_dir / "decompositions")
                job = Job(request, limits, jobdir, children, cache, digest, env_cache(settings))
                payload: PhysicsPayload | None = None
                files: dict[str, str] = {}
                try:
                    geom = build(job, inputs)
                    payload = simulate(job, geom)
                    failure = Failure(payload.failure, payload.reason) if payload.failure else None
                    children.check_cancelled()
                    files = collect(
                        jobdir.path / "out",
                        jobdir.scratch("collected"),
                        {str(k): v for k, v in payload.files.items()},
                        limits.max_artifact_bytes,
                    )
                except Failed as f:
                    failure = f.failure
                children.check_cancelled()  # a child ended by a cancel is never reported as FAIL
                structlog.contextvars.bind_contextvars(phase="store")
                children.progress(Progress("store", 0.0, 0.0))
                geometry = jobdir.path / "geometry.json"
                return publish(
                    request_id=request.request_id,
                    prefix=prefix or artifact_prefix(request.request_id),
                    store=store,
                    files_dir=jobdir.path / "collected",
                    failure=failure,
                    reason=payload.reason if payload is not None else "",
                    metrics=payload.metrics if payload is not None else {},
                    files=files,
                    phases=job.phases,
                    started=started,
                    geometry=geometry if geometry.is_file() else None,
                    resources=children.resources,
                    logs=children.logs(),
                    digest=digest,
                )


@contextlib.contextmanager
def _launcher(given: Launcher | None, settings: Settings) -> Iterator[Launcher]:
    """The caller's launcher, or one made for this request and closed with it (its zygote)."""
    if given is not None:
        yield given
        return
    made = make_launcher(settings.sandbox, settings.paths.policy_root, settings.reuse)
    try:
        yield made
    finally:
        made.close()


def env_cache(settings: Settings) -> EnvCache | None:
    mb = settings.reuse.env_cache_mb
    return EnvCache(settings.paths.data_dir / "env-cache", mb * 2**20) if mb else None


def build(job: Job, inputs: list[Source]) -> Geometry:
    """Each source in its own child, all at once (the build123d import dominates each, when
    it is not warm), then the merged geometry checked and kept: nothing invalid reaches the
    physics. An environment built before under the same key comes from the cache instead."""
    t = time.monotonic()
    job.children.progress(Progress("build", 0.0, 0.0))
    try:
        with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
            # A copy of this thread's context per build (one Context cannot be entered by two
            # threads at once): the log lines of the builds keep the job's ids.
            futures = [
                pool.submit(contextvars.copy_context().run, build_or_reuse, job, s) for s in inputs
            ]
            results = [f.result() for f in futures]
    finally:
        job.phases["build"] = time.monotonic() - t
    geom = merge(results[0], results[1] if len(results) > 1 else None)
    lim = job.limits
    validate_geometry(
        geom,
        max_parts=lim.max_parts,
        max_triangles=lim.max_triangles,
        max_vertices=lim.max_vertices,
        tessellation=job.request.options.tessellation,
        objectives=job.request.objectives,
    )
    (job.dir.path / "geometry.json").write_text(geom.model_dump_json())
    return geom


def build_or_reuse(job: Job, source: Source) -> Geometry:
    """The environment from the cache when it is there, else built (and kept when it built)."""
    cache = job.env_cache if source.kind == "environment" else None
    if cache is None:
        return build_one(job, source)
    t = time.monotonic()
    key = cache.key(source, job.digest, job.request.options.tessellation)
    geom = cache.get(key, job.children.frame_caps("build"))
    if geom is not None:
        ms = round((time.monotonic() - t) * 1000, 1)
        metrics.env_cache("hit")
        log.info("env_cache.hit", key=key[:16], ms=ms)
        job.children.note(
            f"===== {source.kind} build: from the cache ({key[:16]}…), {ms} ms =====\n"
        )
        return geom
    metrics.env_cache("miss")
    geom = build_one(job, source)
    cache.put(key, geom)
    return geom


def build_one(job: Job, source: Source) -> Geometry:
    structlog.contextvars.bind_contextvars(phase=f"{source.kind} build")  # this thread's copy
    d = job.dir.input(f"build-{source.kind}")
    step_file = None
    if source.step is not None:
        step_file = "input.step"  # next to job.json, wherever the jail mounts it
        (d / step_file).write_bytes(source.step)
    BuildJob(
        source_kind=source.kind,
        filename=source.filename,
        code=source.code,
        step_file=step_file,
        max_parts=job.limits.max_parts,
        max_triangles=job.limits.max_triangles,
        tessellation=job.request.options.tessellation,
    ).write(d / "job.json")
    out = job.children.run(
        build_spec(job.limits, source.kind, d), f"build_{source.kind}", relay=False
    )
    failure = classify(out) or (build_failure(out.error, source.kind) if out.error else None)
    if failure is not None:
        raise Failed(failure.kind, failure.reason)
    assert out.result is not None
    try:
        return build_result(out.result, source.kind)
    except ProtocolError as e:
        raise Failed(
            FailureKind.PROTOCOL_VIOLATION,
            f"The {source.kind} build step broke the result protocol: {e}.",
        ) from None


def simulate(job: Job, geom: Geometry) -> PhysicsPayload:
    """The verdict, from the physics child (which never ran the design's code)."""
    structlog.contextvars.bind_contextvars(phase="physics")  # reset by run_request at the end
    d = job.dir.input("physics")
    out_dir = job.dir.scratch("out")
    PhysicsJob(
        geometry=geom,
        objectives=job.request.objectives,
        options=job.request.options,
        wall_s=physics_self_stop_s(job.limits),
        decompositions=job.cache.lookup(geom),
    ).write(d / "job.json")
    out = job.children.run(physics_spec(job.limits, d, out_dir), "physics")
    failure = classify(out)
    if failure is not None:
        raise Failed(failure.kind, failure.reason)
    assert out.result is not None
    try:
        payload = physics_result(out.result)
    except ProtocolError as e:
        raise Failed(FailureKind.PROTOCOL_VIOLATION, f"The physics step: {e}.") from None
    if payload.status == "infra":
        raise InfrastructureError(payload.message, cause="render")
    if payload.failure is None and not payload.reason:
        raise Failed(FailureKind.PROTOCOL_VIOLATION, "The physics step gave no verdict.")
    job.cache.store(geom, payload.decompositions)
    job.phases.update((payload.metrics.get("phases_s") or {}).items())
    return payload

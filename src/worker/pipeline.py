"""A SimulationRequest end to end: build children → geometry checks → physics child → artifacts.

Trusted code in the worker's process. The agent's code only ever runs in a build child; the
verdict comes from the physics child, which never ran it. Every job works in its own temporary
directory, removed when the job ends, whatever happened.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import structlog
from pydantic import ValidationError

from common.models.simulation import (
    MAX_CODE_BYTES,
    MAX_STEP_BYTES,
    CadSource,
    FailureKind,
    SimulationRequest,
    SimulationResult,
)
from worker import metrics
from worker.errors import InfrastructureError, InvalidRequest, JobCancelled
from worker.sandbox.hostio import UnsafeOutput, copy_out
from worker.sandbox.launcher import Launcher, LaunchSpec, SubprocessLauncher
from worker.sandbox.policy import Policy
from worker.sandbox.protocol import (
    PhysicsPayload,
    ProgressFrame,
    ProtocolError,
    build_result,
    physics_result,
)
from worker.sandbox.supervisor import ChildOutcome, LaunchError, classify, run_child
from worker.settings import Settings
from worker.simulation.geometry import Geometry, GeometryError, merge, validate_geometry
from worker.simulation.loop import Progress, ProgressFn
from worker.simulation.render import report_markdown
from worker.storage.base import (
    ArtifactStore,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    check_key,
)

log = structlog.get_logger("simjail.pipeline")

MAX_URI_STEP_BYTES = 64 * MAX_STEP_BYTES
"""Largest STEP file read from a `uri` (64 MiB): inline STEP data is capped at MAX_STEP_BYTES,
and the contract sends larger files through the store."""

OWNER_FILE = ".owner"
"""In each job directory: the pid of the worker process that made it."""
JOB_DIR_PREFIX = "simjail-"

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


def build_spec(settings: Settings, kind: str, job_dir: Path) -> LaunchSpec:
    return LaunchSpec(
        name=f"{kind} build",
        jail="build",
        module="worker.sandbox.build_child",
        job_dir=job_dir,
        wall_s=settings.build_wall_s,
        cpu_s=settings.build_cpu_s,
        memory_mb=settings.memory_mb,
    )


def physics_spec(settings: Settings, job_dir: Path, out_dir: Path) -> LaunchSpec:
    return LaunchSpec(
        name="physics",
        jail="physics",
        module="worker.sandbox.physics_child",
        job_dir=job_dir,
        wall_s=settings.physics_wall_s,
        cpu_s=settings.physics_cpu_s,
        memory_mb=settings.physics_memory_mb,
        out_dir=out_dir,
    )


def make_launcher(settings: Settings) -> Launcher:
    """The launcher the settings name. nsjail is checked now and refuses to start (fail closed)
    when it cannot work; the unsafe launcher is only ever used when asked for."""
    if settings.sandbox == "unsafe-subprocess":
        return SubprocessLauncher()
    from worker.sandbox.nsjail import NsjailLauncher

    launcher = NsjailLauncher(Policy(settings.policy_root))
    launcher.check()
    return launcher


def policy_digest(launcher: Launcher, settings: Settings) -> str:
    """Hash of the policy that judged a run: the launcher and every limit it enforced."""
    policy = {
        "launcher": launcher.name,
        **settings.model_dump(mode="json", exclude={"data_dir", "artifacts_dir"}),
    }
    return "sha256:" + hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()


class _Failed(Exception):
    def __init__(self, kind: FailureKind, reason: str) -> None:
        self.kind, self.reason = kind, reason


class Job:
    """One request's run. Use `run_request` unless you need the pieces."""

    def __init__(
        self,
        request: SimulationRequest,
        settings: Settings,
        store: ArtifactStore,
        *,
        launcher: Launcher | None = None,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.request = request
        self.cancel_event = cancel or threading.Event()
        """Set it (from any thread) to cancel the job: a running child is ended as on a breach,
        no further child starts, and `run` raises JobCancelled once every child is gone."""
        self.settings = settings.effective(request)
        self.store = store
        self._launcher = launcher
        self.on_progress = on_progress
        self.phases: dict[str, float] = {}
        self.resources: dict[str, dict[str, float]] = {}
        self.logs: list[str] = []
        self.geometry_path: Path | None = None
        self.log = log.bind(request_id=request.request_id)

    @property
    def launcher(self) -> Launcher:
        """Made (and, for nsjail, checked) when the first child starts, so a malformed request
        is reported as such before the sandbox is consulted."""
        if self._launcher is None:
            self._launcher = make_launcher(self.settings)
        return self._launcher

    # --- public ----------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the job to stop (thread-safe); `run` then raises JobCancelled."""
        self.cancel_event.set()

    def run(self) -> SimulationResult:
        # Every line logged for this job (also from the build threads, which get a copy of this
        # context) carries the request id and the phase, and whatever the caller bound (the
        # activity binds workflow_id, run_id and attempt).
        with structlog.contextvars.bound_contextvars(
            request_id=self.request.request_id, phase="prepare"
        ):
            return self._run()

    def _run(self) -> SimulationResult:
        t0 = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f"{JOB_DIR_PREFIX}{self.request.request_id[:32]}-"))
        # Traversable but not listable by others: the jail's uid reaches its own job directory
        # by name (nsjail binds it as that uid), nothing more.
        workdir.chmod(0o711)
        try:
            # Who owns it: a restarted worker removes the directories of dead owners only.
            (workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
            try:
                geom = self._build_all(workdir)
                payload = self._physics(workdir, geom)
            except _Failed as f:
                self._check_cancelled()  # a child ended by a cancel is never reported as FAIL
                return self._publish(workdir, f.kind, f.reason, {}, {}, t0)
            self._check_cancelled()
            files = self._collect(workdir, {str(k): v for k, v in payload.files.items()})
            return self._publish(
                workdir / "collected", payload.failure, payload.reason, payload.metrics, files, t0
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    # --- build -----------------------------------------------------------------------------------

    def _build_all(self, workdir: Path) -> Geometry:
        t = time.monotonic()
        self._progress(Progress("build", 0.0, 0.0))
        sources: list[tuple[Literal["design", "environment"], CadSource]] = [
            ("design", self.request.design)
        ]
        if self.request.environment is not None:
            sources.append(("environment", self.request.environment))
        # Each source in its own child, both at once: the build123d import (~2 s) dominates.
        try:
            with ThreadPoolExecutor(max_workers=len(sources)) as pool:
                # A copy of this thread's context per build (one Context cannot be entered by
                # two threads at once): the log lines of the builds keep the job's ids.
                futures = [
                    pool.submit(contextvars.copy_context().run, self._build_one, workdir, k, s)
                    for k, s in sources
                ]
                results = [f.result() for f in futures]
        finally:
            self.phases["build"] = time.monotonic() - t
        design = results[0]
        env = results[1] if len(results) > 1 else None
        geom = merge(design, env)
        try:
            validate_geometry(
                geom,
                max_parts=self.settings.max_parts,
                max_triangles=self.settings.max_triangles,
            )
        except GeometryError as e:
            raise _Failed(FailureKind(e.kind), f"The geometry was rejected: {e.message}.") from None
        self.geometry_path = workdir / "geometry.json"
        self.geometry_path.write_text(geom.model_dump_json())
        return geom

    def _build_one(
        self, workdir: Path, kind: Literal["design", "environment"], src: CadSource
    ) -> Geometry:
        structlog.contextvars.bind_contextvars(phase=f"{kind} build")  # this thread's copy
        jobdir = workdir / f"build-{kind}"
        jobdir.mkdir()
        jobdir.chmod(0o755)  # readable by the jail's unprivileged user, writable by none
        job: dict[str, Any] = {
            "source_kind": kind,
            "filename": f"{kind}.py",
            # The child stops extracting once a cap is exceeded (validate_geometry checks the
            # merged geometry again): thousands of parts are GEOMETRY_LIMIT, not a CPU limit.
            "max_parts": self.settings.max_parts,
            "max_triangles": self.settings.max_triangles,
        }
        code, step = self._resolve(src, kind)
        if code is not None:
            job["code"] = code
        else:
            assert step is not None
            (jobdir / "input.step").write_bytes(step)
            job["step_file"] = "input.step"  # next to job.json, wherever the jail mounts it
            job["filename"] = f"{kind}.step"
        (jobdir / "job.json").write_text(json.dumps(job))
        out = self._run_child(
            build_spec(self.settings, kind, jobdir),
            resource_key=f"build_{kind}",
        )
        failed = classify(out)
        if failed is not None:
            raise _Failed(*failed)
        if out.error is not None:
            where = "" if kind == "design" else "Environment: "
            raise _Failed(FailureKind(out.error.kind), where + out.error.message)
        assert out.result is not None
        try:
            return build_result(out.result, kind)
        except ProtocolError as e:
            raise _Failed(
                FailureKind.PROTOCOL_VIOLATION,
                f"The {kind} build step broke the result protocol: {e}.",
            ) from None

    def _resolve(self, src: CadSource, kind: str) -> tuple[str | None, bytes | None]:
        if src.code is not None:
            return src.code, None
        if src.step is not None:
            return None, src.step
        assert src.uri is not None
        u = urlparse(src.uri)
        name = unquote(u.path)
        step = name.lower().endswith((".step", ".stp"))
        cap = MAX_URI_STEP_BYTES if step else MAX_CODE_BYTES
        if u.scheme == "file":
            path = Path(name)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise InvalidRequest(f"{kind}.uri: cannot read {path}: {e.strerror}") from None
        elif u.scheme == "s3":
            data = self._read_s3(kind, u.netloc, name.lstrip("/"), cap)
        else:
            raise InfrastructureError(f"{kind}.uri: no store is configured for {u.scheme}:// URLs")
        if len(data) > cap:  # a file:// source (an S3 object was refused before the download)
            raise InvalidRequest(f"{kind}.uri: {src.uri} is larger than {cap} bytes")
        if step:
            return None, data
        try:
            return CadSource(code=data.decode("utf-8")).code, None
        except (UnicodeDecodeError, ValidationError) as e:
            raise InvalidRequest(
                f"{kind}.uri: {src.uri} is not a UTF-8 source under the size cap: {e}"
            ) from None

    def _read_s3(self, kind: str, bucket: str, name: str, cap: int) -> bytes:
        """An object of the configured S3 store: only its bucket, only under its prefix, at
        most `cap` bytes. Anything else is the request's fault (InvalidRequest naming the
        field); an unreachable store is an infrastructure fault (retryable)."""
        from worker.storage.s3 import S3Store

        store = self.store if isinstance(self.store, S3Store) else None
        if store is None and self.settings.store == "s3":
            from worker.storage import make_store

            made = make_store(self.settings)
            store = made if isinstance(made, S3Store) else None
        if store is None:
            raise InfrastructureError(f"{kind}.uri: no S3 store is configured on this worker")
        where = f"s3://{store.bucket}/{store.prefix}"
        if bucket != store.bucket or not name.startswith(store.prefix):
            raise InvalidRequest(
                f"{kind}.uri: s3://{bucket}/{name} is outside the artifact store ({where})"
            )
        try:
            key = check_key(name[len(store.prefix) :])
        except StorageError:
            raise InvalidRequest(f"{kind}.uri: s3://{bucket}/{name} is not a valid key") from None
        try:
            return store.get_bytes(key, cap)
        except (ObjectTooLarge, ObjectNotFound) as e:
            raise InvalidRequest(f"{kind}.uri: {e.message}") from None

    # --- physics ---------------------------------------------------------------------------------

    def _physics(self, workdir: Path, geom: Geometry) -> PhysicsPayload:
        structlog.contextvars.bind_contextvars(phase="physics")  # reset by run() at the end
        jobdir = workdir / "physics"
        jobdir.mkdir()
        jobdir.chmod(0o755)
        outdir = workdir / "out"
        outdir.mkdir()
        wall = self.settings.physics_wall_s
        job = {
            "geometry": geom.model_dump(mode="json"),
            "objectives": self.request.objectives.model_dump(mode="json"),
            "options": self.request.options.model_dump(mode="json"),
            # The child stops itself a little before the supervisor would kill it, so a slow
            # run still reports what it measured.
            "wall_s": max(1.0, wall - 5.0),
        }
        (jobdir / "job.json").write_text(json.dumps(job))
        out = self._run_child(
            physics_spec(self.settings, jobdir, outdir),
            resource_key="physics",
        )
        failed = classify(out)
        if failed is not None:
            raise _Failed(*failed)
        assert out.result is not None
        try:
            payload = physics_result(out.result)
        except ProtocolError as e:
            raise _Failed(FailureKind.PROTOCOL_VIOLATION, f"The physics step: {e}.") from None
        if payload.status == "infra":
            raise InfrastructureError(payload.message)
        if payload.failure is None and not payload.reason:
            raise _Failed(FailureKind.PROTOCOL_VIOLATION, "The physics step gave no verdict.")
        for key, secs in (payload.metrics.get("phases_s") or {}).items():
            self.phases[key] = secs
        return payload

    def _collect(self, workdir: Path, files: dict[str, str]) -> dict[str, str]:
        """Copy the physics jail's files out of its writable directory, safely (hostio)."""
        dest = workdir / "collected"
        dest.mkdir()
        got: dict[str, str] = {}
        for name, fname in files.items():
            target = ARTIFACT_NAMES[name]
            try:
                copy_out(workdir / "out", fname, dest / target, self.settings.max_artifact_bytes)
            except UnsafeOutput as e:
                self.log.warning("artifact.refused", artifact=name, reason=str(e))
                continue
            got[name] = target
        return got

    # --- shared ----------------------------------------------------------------------------------

    def _check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(f"request {self.request.request_id} was cancelled")

    def _run_child(self, spec: LaunchSpec, resource_key: str) -> ChildOutcome:
        self._check_cancelled()
        if self.launcher.name == "unsafe-subprocess":
            self.log.warning(
                "sandbox.unsafe",
                phase=spec.name,
                detail="plain child process: no namespaces, no seccomp; not for untrusted code",
            )
        self.log.info("child.start", phase=spec.name, launcher=self.launcher.name)

        def relay(f: ProgressFrame) -> None:
            self._progress(Progress(f.phase, f.sim_time_s, f.fraction))

        try:
            with metrics.active_jail(spec.jail):
                out = run_child(
                    self.launcher,
                    spec,
                    on_progress=relay,
                    max_output_bytes=self.settings.max_output_bytes,
                    max_frame_bytes=self.settings.max_frame_bytes,
                    cancel=self.cancel_event,
                )
        except LaunchError as e:
            self._check_cancelled()
            raise InfrastructureError(e.args[0]) from e
        if out.start_latency_s is not None:
            metrics.jail_started(spec.jail, out.start_latency_s)
        if out.cancelled:
            self.log.info("child.cancelled", phase=spec.name, wall_s=round(out.wall_s, 3))
            raise JobCancelled(f"request {self.request.request_id} was cancelled")
        self.resources[resource_key] = {
            "cpu_s": round(out.cpu_s, 3),
            "peak_rss_mb": round(out.peak_rss_mb, 1),
            "wall_s": round(out.wall_s, 3),
        }
        # Every line says where it came from, escaped: a child cannot forge a section of the
        # logs artifact (a fake "jail|" line) or a terminal sequence.
        self.logs.append(
            f"===== {spec.name}: {out.report}, {out.wall_s:.2f} s =====\n"
            + quote_lines("out| ", out.stdout)
            + quote_lines("err| ", out.stderr)
            + quote_lines("jail| ", out.jail_log)
        )
        self.log.info(
            "child.end",
            phase=spec.name,
            exit_code=out.report.exit_code,
            signal=out.report.signal,
            wall_s=round(out.wall_s, 3),
            timed_out=out.timed_out,
        )
        return out

    def _progress(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def _publish(
        self,
        files_dir: Path,
        failure: FailureKind | None,
        reason: str,
        metrics: dict[str, Any],
        files: dict[str, str],
        t0: float,
    ) -> SimulationResult:
        structlog.contextvars.bind_contextvars(phase="store")
        return publish(
            request_id=self.request.request_id,
            store=self.store,
            files_dir=files_dir,
            geometry=self.geometry_path,
            failure=failure,
            reason=reason,
            metrics=metrics,
            files=files,
            phases=self.phases,
            started=t0,
            resources=self.resources,
            logs="".join(self.logs),
            digest=policy_digest(self.launcher, self.settings),
        )


def printable(text: str) -> str:
    """`text` on one line, with control and format characters (ANSI escapes, carriage returns,
    bidi overrides) written as visible escapes. A reason is printed to terminals and logs, and
    the user's code chose part of it (an exception message): it must not be able to repaint a
    FAIL as SUCCESS."""
    return "".join(c if c.isprintable() else " " if c in "\n\t" else ascii(c)[1:-1] for c in text)


def quote_lines(prefix: str, text: str) -> str:
    """Each line of `text` escaped with `printable` and prefixed, one per output line."""
    return "".join(f"{prefix}{printable(line)}\n" for line in text.splitlines())


def publish(
    *,
    request_id: str,
    store: ArtifactStore,
    files_dir: Path,
    failure: FailureKind | None,
    reason: str,
    metrics: dict[str, Any],
    files: dict[str, str],
    phases: dict[str, float],
    geometry: Path | None = None,
    started: float,
    resources: dict[str, dict[str, float]] | None = None,
    logs: str | None = None,
    digest: str = "",
) -> SimulationResult:
    """Upload the files, write the report, and assemble the SimulationResult. Keys are
    `<request_id>/<name>`, so a retry overwrites instead of duplicating."""
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
    metrics = dict(metrics)
    for key, default in (
        ("sim_time_s", 0.0),
        ("steps", 0),
        ("parts", {}),
        ("goal", None),
        ("energy_j", None),
        ("max_contact_force_n", 0.0),
        ("runs", []),
    ):
        metrics.setdefault(key, default)
    metrics["resources"] = resources or {}
    phases = {k: round(v, 4) for k, v in phases.items()}
    for key in ("build", "compile", "simulate", "render"):
        phases.setdefault(key, 0.0)
    phases["store"] = round(time.monotonic() - t, 4)
    metrics["phases_s"] = phases
    metrics["wall_time_s"] = round(time.monotonic() - started, 3)
    if "real_time_factor" not in metrics:
        sim_wall = phases["simulate"] + phases["render"]
        metrics["real_time_factor"] = metrics["sim_time_s"] / sim_wall if sim_wall else 0.0
    result = SimulationResult(
        outcome="SUCCESS" if failure is None else "FAIL",
        reason=printable(reason)[:2000],
        failure=failure,
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


def remove_stale_job_dirs(tmpdir: Path | None = None) -> list[Path]:
    """Remove the job directories (`<tmp>/simjail-*` with an owner file) whose worker process
    is no longer alive: what a SIGKILLed worker left. Directories of live workers, directories
    without a readable owner file (probes, other tools) and anything not owned by this user are
    left alone. Call it at worker start, before this process runs any job."""
    from worker.sandbox.nsjail import owner_alive

    base = tmpdir or Path(tempfile.gettempdir())
    removed = []
    for d in sorted(base.glob(f"{JOB_DIR_PREFIX}*")):
        try:
            st = d.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            marker = d / OWNER_FILE
            mst = marker.lstat()
            if not stat.S_ISREG(mst.st_mode) or mst.st_uid != os.geteuid() or mst.st_size > 32:
                continue
            pid = int(marker.read_text().strip())
        except (OSError, ValueError):
            continue
        if not owner_alive(pid):
            shutil.rmtree(d, ignore_errors=True)  # never follows links the jail planted
            removed.append(d)
    return removed


def run_request(
    request: SimulationRequest,
    settings: Settings,
    store: ArtifactStore,
    *,
    launcher: Launcher | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> SimulationResult:
    """Run one request. Returns FAIL results for everything the submitted code caused; raises
    InvalidRequest (bad request), InfrastructureError (retryable fault) or, once `cancel` was
    set and every child is gone, JobCancelled."""
    return Job(
        request, settings, store, launcher=launcher, on_progress=on_progress, cancel=cancel
    ).run()

"""Running a job's children: one place for what every child run needs around it.

`Children.run` starts one child through the supervisor and, around it: warns on every run of
the unsafe launcher, counts it in the metrics, relays its progress, records its resources and
its section of the logs artifact (every line escaped and prefixed), turns a launcher that
cannot start into an InfrastructureError, and a cancellation into JobCancelled.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from worker import metrics
from worker.errors import InfrastructureError, JobCancelled
from worker.progress import Progress, ProgressFn
from worker.sandbox.launcher import Launcher, LaunchSpec
from worker.sandbox.policy import judging_digest, judging_record
from worker.sandbox.protocol import PHYSICS_CAPS, FrameCaps, ProgressFrame, geometry_caps
from worker.sandbox.supervisor import ChildOutcome, LaunchError, run_child
from worker.settings import JobLimits
from worker.text import quote_lines

log = structlog.get_logger("simjail.children")

PHYSICS_STOP_EARLY_S = 5.0
"""The physics child stops itself this much before its wall budget, so a slow run still reports
what it measured before the supervisor would kill it."""


def build_spec(limits: JobLimits, kind: str, job_dir: Path) -> LaunchSpec:
    return LaunchSpec(
        name=f"{kind} build",
        jail="build",
        module="worker.sandbox.build_child",
        job_dir=job_dir,
        wall_s=limits.build_wall_s,
        cpu_s=limits.build_cpu_s,
        memory_mb=limits.memory_mb,
    )


def physics_spec(limits: JobLimits, job_dir: Path, out_dir: Path) -> LaunchSpec:
    return LaunchSpec(
        name="physics",
        jail="physics",
        module="worker.sandbox.physics_child",
        job_dir=job_dir,
        wall_s=limits.physics_wall_s,
        cpu_s=limits.physics_cpu_s,
        memory_mb=limits.physics_memory_mb,
        out_dir=out_dir,
    )


def physics_self_stop_s(limits: JobLimits) -> float:
    return max(1.0, limits.physics_wall_s - PHYSICS_STOP_EARLY_S)


def policy_record(launcher: Launcher, limits: JobLimits) -> dict[str, object]:
    """What judges a job with these limits: the launcher, its policy files, the limits each
    jail is started with (never above the files' ceilings) and the job's own caps."""
    unused = Path("/nonexistent")
    jails = {
        "build": launcher.limits(build_spec(limits, "design", unused)),
        "physics": launcher.limits(physics_spec(limits, unused, unused)),
    }
    return judging_record(launcher.name, launcher.policy, jails, limits.model_dump())


def policy_digest(launcher: Launcher, limits: JobLimits) -> str:
    """A result's `policy_digest`: the sha256 of `policy_record`."""
    return judging_digest(policy_record(launcher, limits))


class Children:
    """The children of one job. Thread-safe: the design and environment builds run at once."""

    def __init__(
        self,
        launcher: Launcher,
        limits: JobLimits,
        *,
        cancel: threading.Event,
        on_progress: ProgressFn | None = None,
    ) -> None:
        self.launcher = launcher
        self.limits = limits
        self.cancel = cancel
        """Set from any thread: a running child is ended as on a breach, no further child
        starts, and `run` raises JobCancelled once the child is gone."""
        self.on_progress = on_progress
        self.resources: dict[str, dict[str, float]] = {}
        self._logs: list[str] = []
        self._lock = threading.Lock()

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled("the job was cancelled")

    def progress(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def note(self, section: str) -> None:
        """A section of the logs artifact that is ours, not a child's (a cache hit)."""
        with self._lock:
            self._logs.append(section)

    def logs(self) -> str:
        """The logs artifact: one section per child, in the order they ended."""
        with self._lock:
            return "".join(self._logs)

    def frame_caps(self, jail: str) -> FrameCaps:
        """A build child may send the largest geometry the job's caps allow and no more; the
        physics child its metrics. Never above the job's max_frame_bytes."""
        lim = self.limits
        caps = (
            geometry_caps(lim.max_parts, lim.max_triangles, lim.max_vertices)
            if jail == "build"
            else PHYSICS_CAPS
        )
        frame = min(caps.frame_bytes, lim.max_frame_bytes)
        return FrameCaps(frame, min(caps.total_bytes, 4 * frame), caps.values)

    def run(self, spec: LaunchSpec, resource_key: str, *, relay: bool = True) -> ChildOutcome:
        """Run one child to its end. Raises JobCancelled (cancelled before or during it) and
        InfrastructureError (the launcher could not start it); every other ending is in the
        outcome, for `classify` to judge. With `relay`, its progress frames reach the caller
        (terminals, heartbeats); a build child's never do: our build child sends none, so any
        it sends come from the design's code."""
        self.check_cancelled()
        if self.launcher.name == "unsafe-subprocess":
            log.warning(
                "sandbox.unsafe",
                phase=spec.name,
                detail="plain child process: no namespaces, no seccomp; not for untrusted code",
            )
        log.info("child.start", phase=spec.name, launcher=self.launcher.name)

        def relay_frame(f: ProgressFrame) -> None:
            self.progress(Progress(f.phase, f.sim_time_s, f.fraction))

        try:
            with metrics.active_jail(spec.jail):
                out = run_child(
                    self.launcher,
                    spec,
                    on_progress=relay_frame if relay else None,
                    max_output_bytes=self.limits.max_output_bytes,
                    frame_caps=self.frame_caps(spec.jail),
                    cancel=self.cancel,
                )
        except LaunchError as e:
            self.check_cancelled()
            raise InfrastructureError(e.args[0], cause="sandbox") from e
        if out.start_latency_s is not None:
            metrics.jail_started(spec.jail, out.start_latency_s)
        if out.cancelled:
            log.info("child.cancelled", phase=spec.name, wall_s=round(out.wall_s, 3))
            raise JobCancelled("the job was cancelled")
        # Every line says where it came from, escaped: a child cannot forge a section of the
        # logs artifact (a fake "jail|" line) or a terminal sequence.
        section = (
            f"===== {spec.name}: {out.report}, {out.wall_s:.2f} s =====\n"
            + quote_lines("out| ", out.stdout)
            + quote_lines("err| ", out.stderr)
            + quote_lines("jail| ", out.jail_log)
        )
        with self._lock:
            self.resources[resource_key] = {
                "cpu_s": round(out.cpu_s, 3),
                "peak_rss_mb": round(out.peak_rss_mb, 1),
                "wall_s": round(out.wall_s, 3),
            }
            self._logs.append(section)
        log.info(
            "child.end",
            phase=spec.name,
            exit_code=out.report.exit_code,
            signal=out.report.signal,
            wall_s=round(out.wall_s, 3),
            timed_out=out.timed_out,
        )
        return out

"""The physics job: Geometry + objectives + options → verdict, metrics and files in a directory.

`judge` is what the physics child runs and what `simulate_local` runs in-process: the one place
where everything the physics side can raise becomes an outcome. It builds the scene, runs the
nominal run (rendered when asked), then each jitter run, and writes into `out_dir`: `model.xml`,
`plots.svg` (what decided the run, over simulated time) and, when rendering, `video.mp4`,
`poster.png` and `contact.png` (the decisive moment: of the nominal run, or of the first
perturbed run that failed) and `last.png` (the nominal run's final state). Storage and the
reports belong to the caller, who knows the artifact URLs.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from common.models.simulation import FailureKind, Objectives, SimOptions
from worker.errors import Failed, Failure, InfrastructureError
from worker.progress import Progress, ProgressFn
from worker.simulation.builder import Scene, build_scene
from worker.simulation.collision import Decomposer
from worker.simulation.geometry import ConvexPieces, Geometry, warnings
from worker.simulation.loop import RunSummary, SimulationLoop
from worker.simulation.objectives import Decision
from worker.simulation.plots import plots_svg

if TYPE_CHECKING:  # rendering (EGL, PyAV) is imported only when a run is rendered
    from worker.simulation.render import Renderer


@dataclass
class PhysicsOutcome:
    failure: Failure | None
    reason: str
    metrics: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    """Artifact name → file name inside out_dir."""
    decompositions: dict[str, ConvexPieces] = field(default_factory=dict)
    """Convex decompositions computed for this job (cache key → pieces), for the cache."""


def judge(
    geom: Geometry,
    objectives: Objectives,
    options: SimOptions,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
    wall_deadline: float | None = None,
    decompositions: dict[str, ConvexPieces] | None = None,
) -> PhysicsOutcome:
    """The verdict on `geom`. `decompositions` are cached convex decompositions (checked again
    before use). Everything the design caused is a FAIL in the outcome (Failed);
    a fault of ours on this input is CRASHED (retrying cannot help); only an infrastructure
    fault (rendering unavailable) raises, as InfrastructureError."""
    try:
        return run_physics(
            geom,
            objectives,
            options,
            out_dir,
            on_progress=on_progress,
            wall_deadline=wall_deadline,
            decompositions=decompositions,
        )
    except Failed as f:
        return PhysicsOutcome(failure=f.failure, reason=f.reason, metrics={})
    except InfrastructureError:
        raise
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        failure = Failure(
            FailureKind.CRASHED, f"The physics step failed: {type(e).__name__}: {str(e)[:500]}"
        )
        return PhysicsOutcome(failure=failure, reason=failure.reason, metrics={})


def run_physics(
    geom: Geometry,
    objectives: Objectives,
    options: SimOptions,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
    wall_deadline: float | None = None,
    decompositions: dict[str, ConvexPieces] | None = None,
) -> PhysicsOutcome:
    """Raises Failed (a model MuJoCo refuses, controls naming unknown actuators, the wall
    budget running out) and InfrastructureError (no rendering); every verdict is in the
    outcome. Use `judge`, which maps them."""
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    if on_progress:
        on_progress(Progress("compile", 0.0, 0.0))
    scene = build_scene(geom, objectives, options, Decomposer(cached=dict(decompositions or {})))
    files: dict[str, str] = {}
    (out_dir / "model.xml").write_text(scene.spec.to_xml())
    files["mjcf"] = "model.xml"
    phases["compile"] = time.monotonic() - t0

    runs: list[RunSummary] = []
    if options.render:
        from worker.simulation.render import Renderer

        with Renderer(scene, objectives, options.width, options.height) as renderer:
            in_runs_s, render_s = _rendered_runs(
                renderer, scene, objectives, options, out_dir, files, runs,
                on_progress=on_progress, wall_deadline=wall_deadline,
            )  # fmt: skip
    else:
        in_runs_s = render_s = 0.0
        loop = SimulationLoop(
            scene, objectives, options, on_progress=on_progress, wall_deadline=wall_deadline
        )
        runs.append(loop.run(0))
        for i in range(1, options.jitter.runs + 1):
            jl = SimulationLoop(
                scene,
                objectives,
                options,
                on_progress=_scaled(on_progress, i, options.jitter.runs),
                wall_deadline=wall_deadline,
            )
            runs.append(jl.run(i, _jitter_rng(options, i)))

    nominal = runs[0]
    failed = next((r for r in runs if r.failure is not None), None)
    t_plots = time.monotonic()
    decisive = failed or nominal
    if decisive.series is not None:
        (out_dir / "plots.svg").write_text(plots_svg(decisive.series, _plot_marker(decisive)))
        files["plots"] = "plots.svg"
    render_s += time.monotonic() - t_plots
    phases["simulate"] = sum(r.wall_time_s for r in runs) - in_runs_s
    phases["render"] = render_s
    if failed is None:
        failure, reason = None, nominal.reason
        if len(runs) > 1:
            reason += f" All {len(runs)} runs passed (nominal + {len(runs) - 1} perturbed)."
    elif failed.run == 0:
        failure, reason = failed.failure, failed.reason
    else:
        reason = f"Perturbed run {failed.run} of {len(runs) - 1} failed: {failed.reason}"
        assert failed.failure is not None
        failure = Failure(failed.failure.kind, reason)
    sim_wall = sum(r.wall_time_s for r in runs)
    metrics: dict[str, Any] = {
        "sim_time_s": nominal.sim_time_s,
        "steps": nominal.steps,
        "phases_s": phases,
        "real_time_factor": (sum(r.sim_time_s for r in runs) / sim_wall if sim_wall > 0 else 0.0),
        "parts": nominal.parts,
        "goal": nominal.goal,
        "energy_j": nominal.energy_j,
        "max_contact_force_n": nominal.max_contact_force_n,
        "warnings": warnings(geom) + scene.decomposer.warnings,
        "triangles": sum(m.triangle_count for p in geom.parts for m in p.solids),
        "collision": dict(scene.decomposer.stats),
        "mujoco_warnings": nominal.warnings,
        "frames": nominal.frames,
        "runs": [r.brief() for r in runs],
    }
    return PhysicsOutcome(
        failure=failure,
        reason=reason,
        metrics=metrics,
        files=files,
        decompositions=scene.decomposer.computed,
    )


def _rendered_runs(
    renderer: Renderer,
    scene: Scene,
    objectives: Objectives,
    options: SimOptions,
    out_dir: Path,
    files: dict[str, str],
    runs: list[RunSummary],
    *,
    on_progress: ProgressFn | None,
    wall_deadline: float | None,
) -> tuple[float, float]:
    """The runs with rendering: the nominal run's video, stills and last frame; the stills of
    the first perturbed run that fails instead, when the nominal run passed. Writes the files
    and returns the seconds spent rendering and encoding during the runs (part of their wall
    time), and in all."""
    from worker.simulation.render import Recorder, write_png

    with Recorder(renderer, out_dir / "video.mp4", options.fps) as rec:
        loop = SimulationLoop(
            scene,
            objectives,
            options,
            on_frame=rec.frame,
            on_decision=rec.decided,
            on_end=rec.ended,
            on_progress=on_progress,
            wall_deadline=wall_deadline,
        )
        runs.append(loop.run(0))
        encode_in_run_s = rec.encode_s  # closing the stream (below) is after the run
    files["video"] = "video.mp4"
    stills, last = rec.stills, rec.last
    n = options.jitter.runs
    for i in range(1, n + 1):
        jrec = Recorder(renderer, None, options.fps, run_label=f"perturbed run {i} of {n}")
        need = all(r.failure is None for r in runs)  # the verdict's stills are still to take

        def on_decision(
            d: mujoco.MjData, decision: Decision, jrec: Recorder = jrec, need: bool = need
        ) -> None:
            if need and decision.failure is not None:
                jrec.decided(d, decision)

        jl = SimulationLoop(
            scene,
            objectives,
            options,
            on_decision=on_decision,
            on_progress=_scaled(on_progress, i, n),
            wall_deadline=wall_deadline,
        )
        runs.append(jl.run(i, _jitter_rng(options, i)))
        if jrec.stills is not None:
            stills = jrec.stills
    t0 = time.monotonic()
    if on_progress:
        on_progress(Progress("render", runs[0].sim_time_s, 0.0))
    if stills is not None:
        write_png(out_dir / "poster.png", stills.poster)
        files["poster"] = "poster.png"
        write_png(out_dir / "contact.png", stills.sheet)
        files["contact_sheet"] = "contact.png"
    if last is not None:
        write_png(out_dir / "last.png", last)
        files["last_frame"] = "last.png"
    if on_progress:
        on_progress(Progress("render", runs[0].sim_time_s, 1.0))
    in_runs = renderer.render_s + encode_in_run_s
    return in_runs, renderer.render_s + rec.encode_s + (time.monotonic() - t0)


def _jitter_rng(options: SimOptions, run: int) -> np.random.Generator:
    return np.random.default_rng([options.seed, run])


def _plot_marker(run: RunSummary) -> tuple[float, str] | None:
    """Where the plots mark the decision, and how they name it."""
    if run.decided_at_s is None:
        return None
    what = run.failure.kind.value if run.failure is not None else "SUCCESS"
    return run.decided_at_s, what if run.run == 0 else f"{what} (perturbed run {run.run})"


def _scaled(fn: ProgressFn | None, run: int, total: int) -> ProgressFn | None:
    if fn is None:
        return None

    def report(p: Progress) -> None:
        fn(Progress(f"jitter {run}/{total}", p.sim_time_s, p.fraction))

    return report

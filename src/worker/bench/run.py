"""One run of every benchmark, in an order that keeps the machine as idle as each one needs:
the single-job figures first (start latency, CPU, the cache), then the in-process loops, then
throughput, two jobs at a time."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker import logs
from worker.bench import KEYS, BenchFailed
from worker.bench import jobs as jb
from worker.settings import Settings
from worker.storage.local import LocalStore


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(size: str = "default", say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every figure of the issue and the raw ones it comes from. Raises BenchFailed (or an
    InfrastructureError) when something could not be measured."""
    from worker.bench import scene

    s = jb.SIZES[size]
    logs.configure(level="ERROR")
    raw: dict[str, Any] = {"size": size, "machine": machine()}
    t_all = time.monotonic()
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        dirs = jb.Dirs(Path(tmp))
        new = jb.settings(dirs.new("new"), warm=True)
        cold_settings = jb.settings(dirs.new("cold"), warm=False)
        store = LocalStore(dirs.new("artifacts"))
        with jb.launchers(settings.paths.policy_root) as (warm, cold):
            say("start latency: job arrival → the design's first line")
            warm_ms = jb.first_line_ms(warm, new, store, s.start_jobs + 1)[1:]  # 1st: page cache
            cold_ms = jb.first_line_ms(cold, cold_settings, store, s.cold_start_jobs)
            raw["start"] = {
                "warm_ms": [round(x, 1) for x in warm_ms],
                "cold_p50_ms": round(jb.p50(cold_ms), 1),
                "cold_ms": [round(x, 1) for x in cold_ms],
            }
            say("build CPU beyond the design's own code")
            raw["build_cpu"] = {
                "warm": jb.build_cpu(warm, dirs, s.cpu_jobs),
                "cold": jb.build_cpu(cold, dirs, s.cold_cpu_jobs),
            }
            say("the environment cache")
            hits, builds = jb.env_cache(warm, cold, dirs, s.cache_reads)
            raw["env_cache"] = {"hit_ms": hits, **{k: round(v, 1) for k, v in builds.items()}}
            say("import build123d, eager and with sklearn deferred")
            from worker.bench.imports import build123d_import

            raw["import_build123d"] = build123d_import(1 if size == "tiny" else 5)
            say("physics loop and rendering (in this process)")
            raw["physics"] = scene.physics(2.0 if size == "tiny" else 10.0)
            raw["render"] = scene.render(20 if size == "tiny" else 90)
            say("throughput, 2 jobs at a time, without video")
            raw["throughput"] = {
                "new": jb.throughput(warm, new, store, s.throughput_jobs, render=False),
                "cold": jb.throughput(
                    cold, cold_settings, store, s.cold_throughput_jobs, render=False
                ),
            }  # fmt: skip
            say("throughput, 2 jobs at a time, with video")
            raw["throughput_render"] = {
                "new": jb.throughput(
                    warm, new, store, s.render_jobs, render=True, fps=s.render_fps
                ),
                "cold": jb.throughput(
                    cold, cold_settings, store, s.cold_render_jobs, render=True, fps=s.render_fps
                ),
            }  # fmt: skip
            raw["zygote_counts"] = dict(getattr(warm, "counts", {}))
    raw["wall_s"] = round(time.monotonic() - t_all, 1)
    if raw["zygote_counts"].get("cold", 0):
        raise BenchFailed(f"warm builds fell back to cold jails: {raw['zygote_counts']}")
    r, tp, tpr = raw["render"], raw["throughput"], raw["throughput_render"]
    figures = {
        "warm_start_p50_ms": round(jb.p50(warm_ms), 1),
        "build_cpu_overhead_s": raw["build_cpu"]["warm"]["overhead_s"],
        "env_cache_hit_ms": round(jb.p50(hits), 2),
        "render_ratio": round(r["recorder_fps"] / r["raw_renderer_fps"], 3),
        "render_speedup": round(r["recorder_fps"] / r["todays_recorder_fps"], 3),
        "physics_ratio": round(
            raw["physics"]["loop_steps_per_s"] / raw["physics"]["bare_steps_per_s"], 3
        ),
        "throughput_ratio": round(tp["new"]["jobs_per_min"] / tp["cold"]["jobs_per_min"], 2),
        "throughput_ratio_render": round(
            tpr["new"]["jobs_per_min"] / tpr["cold"]["jobs_per_min"], 2
        ),
    }
    assert tuple(figures) == KEYS
    return {**figures, "raw": raw}

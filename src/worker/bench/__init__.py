"""`simjail bench`: issue 12's figures, each against a raw baseline measured in the same run.

    simjail bench [--json] [--size tiny|default]

- `warm_start_p50_ms`: job arrival to the design's first line, warm builds, p50 (raw: the
  same through a cold jail).
- `build_cpu_overhead_s`: a build's CPU beyond the design's own lines: the jail's side and the
  supervisor's, warm (raw: the same cold, and each part).
- `env_cache_hit_ms`: a repeated environment read from the cache, p50 (raw: its build in a
  warm and in a cold jail).
- `render_ratio`: Recorder fps / a bare `mujoco.Renderer` loop on the same model.
- `render_speedup`: Recorder fps / today's look (a 1024 shadow map, no MSAA, inline encoding).
- `physics_ratio`: SimulationLoop steps/s / a bare `mj_step` loop on the 5-part scene.
- `throughput_ratio`: ramp jobs per minute, new path / cold path, 2 at once, no video.
- `throughput_ratio_render`: the same with video.

The new path is the default worker (warm builds, the environment cache); the cold path is
today's (SIMJAIL_WARM=0, no cache). Nothing here asserts a target: the figures are printed, and
the command exits non-zero (3) only when it could not measure (a job failed, no sandbox).
"""

from __future__ import annotations

KEYS = (
    "warm_start_p50_ms",
    "build_cpu_overhead_s",
    "env_cache_hit_ms",
    "render_ratio",
    "render_speedup",
    "physics_ratio",
    "throughput_ratio",
    "throughput_ratio_render",
)


class BenchFailed(RuntimeError):
    """Something could not be measured (a job did not succeed, a figure is missing)."""

"""What deferring sklearn (and the scipy.stats it pulls) saves: `import build123d` in fresh
interpreters, eagerly and with `defer_unused_imports`, alternated, with the jails' thread pins."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

PROBE = """
import json, resource, sys, time
lazy = sys.argv[1] == "lazy"
if lazy:
    from worker.simulation.imports import defer_unused_imports
    defer_unused_imports()
t, c = time.perf_counter(), time.process_time()
import build123d
out = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
       "modules": len(sys.modules), "sklearn": "sklearn" in sys.modules,
       "scipy_stats": "scipy.stats" in sys.modules,
       "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print(json.dumps(out))
"""
PINS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
}


def _once(mode: str) -> dict[str, float]:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **PINS}
    out = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def build123d_import(runs: int) -> dict[str, dict[str, float]]:
    """Medians of `runs` fresh imports each way (alternated: the page cache is warm for both)."""
    _once("eager")  # the files in the page cache for both
    got: dict[str, list[dict[str, float]]] = {"eager": [], "lazy": []}
    for _ in range(runs):
        for mode in ("eager", "lazy"):
            got[mode].append(_once(mode))
    return {
        mode: {
            key: round(statistics.median(float(r[key]) for r in rs), 3)
            for key in ("wall_s", "cpu_s", "modules", "max_rss_mb", "sklearn", "scipy_stats")
        }
        for mode, rs in got.items()
    }

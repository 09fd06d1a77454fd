"""`simjail bench --json` at its tiny size: one JSON object with exactly the issue's keys and
the raw figures, every figure a positive number, exit 0. No figure is judged here: targets live
in BENCHMARKS.md, not in tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from worker.bench import KEYS

pytestmark = pytest.mark.slow

SIMJAIL = Path(sys.executable).parent / "simjail"


def test_bench_prints_every_figure_and_its_raw_baselines() -> None:
    p = subprocess.run(
        [str(SIMJAIL), "bench", "--json", "--size", "tiny"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stdout[-2000:]
    got = json.loads(lines[0])
    assert list(got) == [*KEYS, "raw"]
    for key in KEYS:
        assert isinstance(got[key], int | float) and math.isfinite(got[key]) and got[key] > 0, key
    raw = got["raw"]
    assert raw["size"] == "tiny" and raw["machine"]["cpus"] >= 1
    assert raw["zygote_counts"]["cold"] == 0 and raw["zygote_counts"]["warm"] > 0
    assert {"warm", "cold"} == set(raw["build_cpu"])
    assert {"eager", "lazy"} == set(raw["import_build123d"])
    assert raw["import_build123d"]["lazy"]["sklearn"] == 0
    for tp in ("throughput", "throughput_render"):
        assert raw[tp]["new"]["concurrency"] == raw[tp]["cold"]["concurrency"] == 2

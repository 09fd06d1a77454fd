"""The worker's own memory is bounded by the job's caps: a design that sends the largest frame
its caps allow, or a frame built to multiply on parsing, costs the (unjailed) worker at most
MEMORY_BOUND_MB above its idle RSS. Measured on a real worker process running real jobs.

Before frames were capped by the geometry caps, one legal 64 MiB frame took the worker to
~1.7 GB and two concurrent ones to 3.4 GB: json.loads turns each tiny value into a Python
object of 30–100 bytes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MEMORY_BOUND_MB = 300
"""Per job, above the worker's idle RSS, at the default caps (SECURITY.md states it)."""

# Designs that write their own result frame (the build child never sends one).
WRITE = """
import base64, json, os, struct, sys
import numpy as np
FD = int(sys.argv[sys.argv.index("--frame-fd") + 1])
def send(obj):
    body = json.dumps(obj).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(FD, data):]
    os._exit(0)
"""

# 200 closed spheres of 1 000 triangles: 200 000 triangles, the default cap.
CAPPED_GEOMETRY = (
    WRITE
    + """
def sphere(n_lat=21, n_lon=25, r=5.0):
    lat = np.linspace(0, np.pi, n_lat)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack(np.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    v = np.concatenate([[[0, 0, r]], np.c_[r * np.sin(ring[:, 0]) * np.cos(ring[:, 1]),
        r * np.sin(ring[:, 0]) * np.sin(ring[:, 1]), r * np.cos(ring[:, 0])], [[0, 0, -r]]])
    t, L, N = [], len(lat), len(lon)
    idx = lambda i, j: 1 + i * N + j % N
    for j in range(N):
        t.append([0, idx(0, j), idx(0, j + 1)])
        t.append([len(v) - 1, idx(L - 1, j + 1), idx(L - 1, j)])
        for i in range(L - 1):
            t += [[idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)],
                  [idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)]]
    return v, np.array(t)

def enclosed(v, t):
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    return abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6

def build():
    v, t = sphere()
    b64 = lambda a, d: base64.b64encode(np.ascontiguousarray(a, dtype=d).tobytes()).decode()
    vol = enclosed(v, t)
    parts = []
    for i in range(200):
        off = np.array([i % 20 * 12.0, i // 20 * 12.0, 6.0])
        parts.append({"label": f"s{i}", "source": "design", "volume_mm3": vol,
                      "com_mm": off.tolist(), "inertia_mm5": [vol * 10] * 3 + [0, 0, 0],
                      "solids": [{"vertices": b64(v + off, "<f4"), "triangles": b64(t, "<i4")}]})
    send({"type": "result", "payload": {"parts": parts}})
"""
)

# Just under the default frame cap, made of the smallest JSON values there are.
TINY_VALUES = (
    WRITE
    + """
def build():
    send({"type": "result", "payload": {"parts": [], "x": [0] * 3_500_000}})  # 10.5 MB
"""
)

PROBE = """
import json, shutil, sys, tempfile, threading, time, uuid
from pathlib import Path
import psutil
from common.models.simulation import SimulationRequest
from worker import logs
from worker.pipeline import run_request
from worker.settings import Settings
from worker.storage.local import LocalStore

logs.configure(json=True, level="ERROR")
designs = json.loads(sys.argv[1])
root = Path(tempfile.mkdtemp(prefix="memprobe-"))
settings, store = Settings(data_dir=root), LocalStore(root / "artifacts")

def job(code):
    req = SimulationRequest.model_validate({"request_id": f"mem-{uuid.uuid4().hex[:8]}",
        "design": {"code": code}, "options": {"render": False, "duration_s": 0.02}})
    r = run_request(req, settings, store)
    return {"failure": r.failure, "reason": r.reason[:300]}

job("from build123d import Box, Pos\\nresult = Pos(0, 0, 9) * Box(9, 9, 9)")  # warm up
me = psutil.Process()
idle = me.memory_info().rss
peak = idle
done = threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, me.memory_info().rss)
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
threads = []
results = [None] * len(designs)
for i, code in enumerate(designs):
    def run(i=i, code=code):
        results[i] = job(code)
    threads.append(threading.Thread(target=run))
for t in threads: t.start()
for t in threads: t.join()
done.set()
print(json.dumps({"idle_mb": idle / 2**20, "peak_mb": peak / 2**20, "results": results}))
shutil.rmtree(root, ignore_errors=True)  # the probe's data dir: nothing left behind
"""


def measure(*designs: str) -> dict[str, object]:
    codes = json.dumps([textwrap.dedent(d) for d in designs])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, codes],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    got: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nworker memory: {got}")
    return got


def test_the_largest_legal_geometry_costs_the_worker_a_bounded_amount() -> None:
    got = measure(CAPPED_GEOMETRY)
    (result,) = got["results"]  # type: ignore[misc]
    assert result["failure"] is None, result  # judged by the physics, as any design
    assert got["peak_mb"] - got["idle_mb"] < MEMORY_BOUND_MB  # type: ignore[operator]


def test_a_frame_built_to_multiply_when_parsed_is_refused_unparsed() -> None:
    got = measure(TINY_VALUES)
    (result,) = got["results"]  # type: ignore[misc]
    assert result["failure"] == "PROTOCOL_VIOLATION"
    assert "JSON values" in result["reason"]
    assert got["peak_mb"] - got["idle_mb"] < MEMORY_BOUND_MB  # type: ignore[operator]


def test_two_such_jobs_at_once_cost_at_most_twice_the_bound() -> None:
    got = measure(CAPPED_GEOMETRY, TINY_VALUES)
    assert got["peak_mb"] - got["idle_mb"] < 2 * MEMORY_BOUND_MB  # type: ignore[operator]

"""Time from job start to the untrusted code's first line, with and without the jail.

    .venv/bin/python bench/bench_jail.py [--runs 5]

Each job runs a design whose first line prints the wall clock; the job starts when the pipeline
is called. Raw baselines measured in the same run: a bare `python -I -c pass` as a subprocess
and the same inside nsjail with the build policy.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.models.simulation import SimulationRequest
from worker import logs
from worker.pipeline import run_request
from worker.settings import Settings
from worker.storage.local import LocalStore

DESIGN = 'import sys, time\nsys.stderr.write(f"FIRSTLINE {time.time()!r}\\n")\nresult = None\n'


def first_line_s(settings: Settings, store: LocalStore) -> float:
    request = SimulationRequest.model_validate(
        {"request_id": "bench-jail", "design": {"code": DESIGN}, "options": {"render": False}}
    )
    t0 = time.time()
    result = run_request(request, settings, store)
    text = Path(result.artifact_urls["logs"].removeprefix("file://")).read_text()
    m = re.search(r"FIRSTLINE ([0-9.]+)", text)
    assert m, text[-2000:]
    return float(m.group(1)) - t0


def bare(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    logs.configure(level="ERROR")
    from worker.sandbox.nsjail import NsjailLauncher
    from worker.sandbox.policy import Policy, default_root

    launcher = NsjailLauncher(Policy(default_root()))
    py = [sys.executable, "-I", "-c", "pass"]
    bare_py = bare(py, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        job.mkdir()
        Path(tmp).chmod(0o711)
        job.chmod(0o755)
        import os

        env = {k: str(v) for k, v in launcher.binds.items()} | {"SIMJAIL_JOB_DIR": str(job)}
        jailed = [
            str(launcher.binary),
            "--config",
            str(launcher.policy.config("build")),
            "-Q",
            "--cgroup_mem_max",
            "0",
            "--cgroup_pids_max",
            "0",
            "--",
            *py,
        ]
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run(
                jailed,
                check=True,
                capture_output=True,
                cwd=launcher.policy.root,
                env={**env, "PATH": os.environ.get("PATH", "")},
            )
            times.append(time.perf_counter() - t)
        bare_jail = statistics.median(times)
        store = LocalStore(Path(tmp) / "store")
        results = {}
        for mode in ("unsafe-subprocess", "nsjail"):
            s = Settings(data_dir=Path(tmp), sandbox=mode)
            results[mode] = statistics.median(first_line_s(s, store) for _ in range(args.runs))
    print(f"bare python -c pass:             {bare_py * 1000:7.1f} ms")
    print(
        f"same in the build jail:          {bare_jail * 1000:7.1f} ms  "
        f"(ratio {bare_jail / bare_py:.2f})"
    )
    for mode, s in results.items():
        print(f"job start → first line ({mode}): {s * 1000:7.1f} ms")
    print(
        f"jail overhead on a job's first line: "
        f"{(results['nsjail'] - results['unsafe-subprocess']) * 1000:.1f} ms "
        f"(ratio {results['nsjail'] / results['unsafe-subprocess']:.2f})"
    )


if __name__ == "__main__":
    main()

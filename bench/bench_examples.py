"""Wall time of each phase for each example, through the same pipeline `simjail run` uses.

    .venv/bin/python bench/bench_examples.py [--no-render]

Baseline measured in the same run: a bare `python -I -c "import build123d"` in a fresh process,
the floor of any build phase (the build child does that import and then runs the design).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common.models.simulation import SimulationRequest
from worker import logs
from worker.pipeline import run_request
from worker.settings import Settings
from worker.storage.local import LocalStore

ROOT = Path(__file__).resolve().parent.parent


def request_for(example: Path, render: bool) -> SimulationRequest:
    env = example / "environment.py"
    if not env.exists() and example.name == "forbid":
        env = ROOT / "examples" / "ramp" / "environment.py"
    obj = example / "objectives.yaml"
    opts = example / "options.yaml"
    options = yaml.safe_load(opts.read_text()) if opts.exists() else {}
    options["render"] = render
    return SimulationRequest.model_validate(
        {
            "request_id": f"bench-{example.name}",
            "design": {"code": (example / "design.py").read_text()},
            "environment": {"code": env.read_text()} if env.exists() else None,
            "objectives": yaml.safe_load(obj.read_text()) if obj.exists() else {},
            "options": options,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args()
    logs.configure(level="ERROR")  # keep the table readable; the jobs' logs are not measured
    t = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-c", "import build123d"], check=True)
    import_s = time.perf_counter() - t
    print(f"baseline: fresh python + import build123d = {import_s:.2f} s")
    cols = ("build", "compile", "simulate", "render", "store")
    print(
        f"{'example':<10} {'verdict':<22} "
        + " ".join(f"{c:>8}" for c in cols)
        + f" {'wall':>7} {'build/import':>12}"
    )
    examples = sorted(p.parent for p in (ROOT / "examples").glob("*/design.py"))
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp))
        for ex in examples:
            result = run_request(request_for(ex, not args.no_render), Settings(), store)
            ph = result.metrics["phases_s"]
            verdict = result.failure or result.outcome
            print(
                f"{ex.name:<10} {verdict:<22} "
                + " ".join(f"{ph.get(c, 0):>8.2f}" for c in cols)
                + f" {result.metrics['wall_time_s']:>7.2f} {ph['build'] / import_s:>12.2f}"
            )


if __name__ == "__main__":
    main()

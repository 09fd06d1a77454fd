"""`simjail loadtest` for real, at a small size: 12 jobs (5 hostile) through its own Temporal dev
server and two workers, one fault of each kind injected while they run; and the checks it
reports on, each shown able to fail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.models.simulation import FailureKind, SimulationResult
from worker.loadtest.cases import BENIGN, HOSTILE, Expected, job_mix
from worker.loadtest.cluster import Cluster
from worker.loadtest.run import check_loopback, percentile, verdict_mismatch

LOADTEST = [sys.executable, "-m", "worker.cli", "loadtest"]


@pytest.mark.slow
def test_twelve_jobs_with_every_fault_lose_duplicate_mismatch_and_leak_nothing() -> None:
    cmd = [*LOADTEST, "--count", "12", "--concurrency", "4", "--hostile-ratio", "0.4"]
    cmd += ["--no-render", "--faults", "kill-worker,restart-server,store-outage", "--json"]
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
    took = time.monotonic() - t
    lines = r.stderr.splitlines()
    assert all(ln.startswith("{") for ln in lines), [ln for ln in lines if not ln.startswith("{")]
    for ln in lines:
        json.loads(ln)
    assert len(r.stdout.splitlines()) == 1, r.stdout[-2000:]
    report = json.loads(r.stdout)
    print(f"\nloadtest of 12 jobs in {took:.1f} s: {json.dumps(report)[:1500]}")
    assert r.returncode == 0, report
    assert report["ok"] is True
    assert (report["submitted"], report["completed"], report["lost"]) == (12, 12, 0)
    assert (report["duplicated"], report["mismatches"], report["leaked"]) == (0, 0, 0)
    assert (report["hostile"], report["benign"]) == (5, 7)
    assert [f["kind"] for f in report["faults"]] == [
        "kill-worker",
        "restart-server",
        "store-outage",
    ]
    assert "while it ran a job" in report["faults"][0]["detail"]
    assert report["faults_not_injected"] == [] and report["fault_errors"] == []
    assert sum(report["outcomes"].values()) == 12
    lat = report["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert report["throughput_jobs_per_min"] > 0
    rss = report["workers_rss_mb"]
    assert len(rss) == 3  # two workers, and the one that replaced the killed one
    assert sum(w["killed"] for w in rss) == 1
    assert all(w["before"] > 0 for w in rss)
    assert all(w["after"] > 0 for w in rss if not w["killed"])
    assert report["dir"] is None  # removed: nothing to look at


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--count", "0"], "--count must be 1..1000"),
        (["--count", "1001"], "--count must be 1..1000"),
        (["--address", "10.1.2.3:7233"], "is not a loopback address"),
        (["--address", "example.com:7233"], "is not a loopback address"),
        (["--address", "127.0.0.1:1", "--faults", "restart-server"], "cannot be combined"),
        (["--faults", "flood-the-disk"], "unknown fault"),
        (["--hostile-ratio", "1.5"], "--hostile-ratio must be between 0 and 1"),
    ],
)
def test_out_of_bounds_flags_exit_2_before_anything_starts(args: list[str], needle: str) -> None:
    r = subprocess.run([*LOADTEST, *args], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("address", ["127.0.0.1:7233", "localhost:7233", "[::1]:7233"])
def test_loopback_addresses_are_accepted(address: str) -> None:
    check_loopback(address)


def test_the_mix_is_bounded_deterministic_and_covers_the_cases() -> None:
    a = job_mix(40, 0.25, seed=3, render=False, run_id="x")
    b = job_mix(40, 0.25, seed=3, render=False, run_id="x")
    assert [j.request for j in a] == [j.request for j in b]
    assert sum(j.case.hostile for j in a) == 10
    assert {j.case.name for j in a if j.case.hostile} == {c.name for c in HOSTILE}
    assert {j.case.name for j in a if not j.case.hostile} == {c.name for c in BENIGN}
    assert len({j.request.request_id for j in a}) == 40
    assert all(not j.request.options.render for j in a)


def test_a_wrong_verdict_is_a_mismatch() -> None:
    (job,) = job_mix(1, 1.0, seed=0, render=False, run_id="x")
    right = SimulationResult(outcome="FAIL", reason="r", failure=job.expected.failure)  # type: ignore[arg-type]
    assert verdict_mismatch(job, right) is None
    forged = SimulationResult(outcome="SUCCESS", reason="The target reached the goal.")
    wrong = verdict_mismatch(job, forged)
    assert wrong is not None and wrong["got"] == "SUCCESS"
    assert wrong["expected"] == str(job.expected)
    assert str(Expected("FAIL", FailureKind.CRASHED)) == "FAIL CRASHED"


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
    assert percentile([], 50) is None


def test_the_leak_check_sees_job_dirs_processes_and_cgroups_left(tmp_path: Path) -> None:
    """What a worker could leave, planted for real: a job directory in the run's temp dir, a
    process working from the run's directory, a per-job cgroup named after a worker's pid."""
    from worker.sandbox import cgroups

    cluster = Cluster(tmp_path / "run", "127.0.0.1:1", "q")
    cluster.prepare()
    assert cluster.leaks() == {"processes": [], "job_dirs": [], "cgroups": []}
    (cluster.tmp / "simjail-job-abcd").mkdir()
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(cluster.dir)]
    )
    fake = subprocess.Popen(["sleep", "60"])  # stands for a worker whose pid names a cgroup
    cluster.workers.append(_Stub(fake))  # type: ignore[arg-type]
    group = cgroups.ROOT / "pids" / cgroups.PARENT / f"{fake.pid}-build-test"
    if cgroups.version() != 1:
        group = cgroups.ROOT / cgroups.PARENT / f"{fake.pid}-build-test"
    group.mkdir(parents=True)
    try:
        found = cluster.leaks()
    finally:
        group.rmdir()
        for p in (sleeper, fake):
            p.kill()
            p.wait()
    assert found["job_dirs"] == [str(cluster.tmp / "simjail-job-abcd")]
    assert any(p.startswith(f"{sleeper.pid}: ") for p in found["processes"]), found
    assert any(f"{fake.pid}: simjail worker still running" in p for p in found["processes"])
    assert found["cgroups"] == [str(group)]


class _Stub:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid


def test_the_workers_environment_keeps_everything_in_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMJAIL_S3_BUCKET", "production-bucket")
    monkeypatch.setenv("SIMJAIL_STORE", "s3")
    monkeypatch.setenv("SIMJAIL_METRICS_PORT", "9100")
    monkeypatch.setenv("TEMPORAL_API_KEY", "for-production")
    env = Cluster(tmp_path, "127.0.0.1:1", "q").env()
    assert env["SIMJAIL_STORE"] == "local"
    assert env["TMPDIR"] == str(tmp_path / "tmp")
    assert env["SIMJAIL_ARTIFACTS_DIR"] == str(tmp_path / "data" / "artifacts")
    assert not [k for k in env if k.startswith(("SIMJAIL_S3_", "SIMJAIL_METRICS_", "TEMPORAL_"))]
    external = Cluster(tmp_path, "127.0.0.1:1", "q", own_server=False).env()
    assert external["TEMPORAL_API_KEY"] == "for-production"

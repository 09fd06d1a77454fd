"""run_request end to end with real build and physics children: each kind of broken design ends
as the right FAIL, a working one as SUCCESS, and no job leaves a directory or a process behind.

The jobs run concurrently once per module (the build123d import, ~3 s of CPU, dominates each);
the tests then check one job each.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import textwrap
import threading
import types
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.models.simulation import (
    CadSource,
    FailureKind,
    Limits,
    SimOptions,
    SimulationRequest,
    SimulationResult,
)
from worker import pipeline
from worker.errors import InvalidRequest
from worker.job import workdir
from worker.progress import Progress
from worker.settings import Settings
from worker.storage.local import LocalStore

DESIGNS = {
    "zerodiv": """\
        def helper():
            return 1 / 0

        def build():
            return helper()
        """,
    "syntax": """\
        from build123d import Box

        def build()
            return Box(10, 10, 10)
        """,
    "returns-none": """\
        def build():
            return None
        """,
    "returns-number": """\
        def build():
            return 42
        """,
    "neither": """\
        import math

        x = math.pi
        """,
    "module-result": """\
        from build123d import Box, Pos

        result = Pos(0, 0, 20) * Box(10, 10, 10)
        result.label = "cube"
        """,
    "parts-typo": """\
        from build123d import Box

        PARTS = {"cube": {"fixed": True}, "ghost": {"fixed": True}}

        def build():
            b = Box(10, 10, 10)
            b.label = "cube"
            return b
        """,
    "system-exit": """\
        import sys

        def build():
            sys.exit(0)
        """,
    "hard-exit": """\
        import os

        def build():
            os._exit(0)
        """,
    "rt-signal": """\
        import os, signal

        def build():
            os.kill(os.getpid(), signal.SIGRTMIN + 5)
        """,
    "cwd": """\
        import os

        def build():
            # Where the jail mounted the job from: field 4 of /job's line in mountinfo (a
            # cold jail's bind), or the source of a warm job's /job tmpfs (which names it).
            with open("/proc/self/mountinfo") as f:
                lines = [ln.split() for ln in f if ln.split()[4] == "/job"]
            f = lines[0]
            job = [f[3] if f[3] != "/" else f[f.index("-") + 2]]
            raise RuntimeError(f"cwd={os.getcwd()} job={job[0]}")
        """,
}


@dataclass
class Jobs:
    tmpdir: Path
    """The temp dir every job of this module made its work directory in."""
    root: Path
    before: list[str]
    after: list[str] = field(default_factory=list)
    workdirs: dict[str, Path] = field(default_factory=dict)
    results: dict[str, SimulationResult] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    progress: dict[str, list[Progress]] = field(default_factory=dict)
    children_after: list[psutil.Process] = field(default_factory=list)
    leftover_processes: list[str] = field(default_factory=list)
    store: LocalStore | None = None


def request(name: str, code: str, **options: Any) -> SimulationRequest:
    return SimulationRequest(
        request_id=name,
        design=CadSource(code=textwrap.dedent(code)),
        options=SimOptions(duration_s=1.0, render=False, **options),
    )


@pytest.fixture(scope="module")
def jobs(
    jail_tmp: Callable[[str], Path],
    simjail_dirs: Callable[[Path], list[str]],
    processes_under: Callable[[Path], list[str]],
) -> Jobs:
    root = jail_tmp("pipeline")  # nsjail binds the job dirs as uid 65534: it must get there
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    out = Jobs(tmpdir=tmpdir, root=root, before=simjail_dirs(tmpdir))
    # Children the test session already had (e.g. a Temporal dev server fixture) are not jobs'.
    earlier = {p.pid for p in psutil.Process().children(recursive=True)}
    lock = threading.Lock()

    def mkdtemp(prefix: str = "", **kw: Any) -> str:
        path = tempfile.mkdtemp(prefix=prefix, **kw)
        with lock:
            out.workdirs[prefix] = Path(path)
        return path

    settings = Settings(data_dir=root / "data", artifacts_dir=root / "artifacts")
    store = LocalStore(root / "artifacts")
    out.store = store

    def one(name: str) -> None:
        seen: list[Progress] = []
        out.progress[name] = seen
        try:
            out.results[name] = pipeline.run_request(
                request(name, DESIGNS[name]), settings, store, on_progress=seen.append
            )
        except Exception as e:  # reported by the test of this job, not by all of them
            out.errors[name] = e

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(tmpdir))
        mp.setattr(workdir, "tempfile", types.SimpleNamespace(mkdtemp=mkdtemp))
        with ThreadPoolExecutor(max_workers=len(DESIGNS)) as pool:
            for f in [pool.submit(one, name) for name in DESIGNS]:
                f.result()
    out.after = simjail_dirs(tmpdir)
    out.children_after = [
        p for p in psutil.Process().children(recursive=True) if p.pid not in earlier
    ]
    out.leftover_processes = processes_under(root)
    return out


def check(jobs: Jobs, name: str, kind: FailureKind | None, reason: str | None = None) -> str:
    if name in jobs.errors:
        raise jobs.errors[name]
    r = jobs.results[name]
    assert r.failure == kind, r.reason
    assert r.outcome == ("SUCCESS" if kind is None else "FAIL")
    if reason is not None:
        assert r.reason == reason
    return r.reason


# --- user mistakes -------------------------------------------------------------------------------


@pytest.mark.slow
def test_exception_in_build_is_user_code_error_with_the_traceback_line(jobs: Jobs) -> None:
    reason = check(jobs, "zerodiv", FailureKind.USER_CODE_ERROR)
    assert "ZeroDivisionError: division by zero" in reason
    assert reason == (
        "The design's build failed: «ZeroDivisionError: division by zero (design.py, line 2, "
        "in helper)»"
    )


@pytest.mark.slow
def test_syntax_error_names_the_line(jobs: Jobs) -> None:
    reason = check(jobs, "syntax", FailureKind.SYNTAX_ERROR)
    assert reason.startswith("The design's build failed: «SyntaxError: ")
    assert reason.endswith("(design.py, line 3)»")


@pytest.mark.slow
def test_build_returning_none_is_no_geometry(jobs: Jobs) -> None:
    check(
        jobs,
        "returns-none",
        FailureKind.NO_GEOMETRY,
        "The design's build failed: «build() returned no solid»",
    )


@pytest.mark.slow
def test_build_returning_a_number_is_no_geometry(jobs: Jobs) -> None:
    check(
        jobs,
        "returns-number",
        FailureKind.NO_GEOMETRY,
        "The design's build failed: «build() returned a int, not a build123d shape»",
    )


@pytest.mark.slow
def test_neither_build_nor_result_is_no_geometry(jobs: Jobs) -> None:
    check(
        jobs,
        "neither",
        FailureKind.NO_GEOMETRY,
        "The design's build failed: «design.py defines neither build() nor a module-level "
        "result, and shows nothing with ocp_vscode's show()»",
    )


@pytest.mark.slow
def test_parts_naming_a_missing_part_is_invalid_geometry(jobs: Jobs) -> None:
    reason = check(jobs, "parts-typo", FailureKind.INVALID_GEOMETRY)
    assert reason.endswith("PARTS names parts that build() did not return: ['ghost']»")


@pytest.mark.slow
def test_system_exit_in_build_is_a_user_code_error(jobs: Jobs) -> None:
    reason = check(jobs, "system-exit", FailureKind.USER_CODE_ERROR)
    assert reason.startswith("The design's build failed: «SystemExit: 0")


@pytest.mark.slow
def test_hard_exit_without_a_result_is_no_result(jobs: Jobs) -> None:
    check(
        jobs, "hard-exit", FailureKind.NO_RESULT, "The design build step exited without a result."
    )


@pytest.mark.slow
def test_a_real_time_signal_to_itself_is_ignored_in_the_jail(jobs: Jobs) -> None:
    """The jailed code is PID 1 of its namespace: a signal it has no handler for, sent to
    itself, is dropped (DESIGN.md §8), so build() goes on and returns None. How a death by a
    real-time signal is classified is covered in test_supervisor and test_nsjail."""
    check(
        jobs,
        "rt-signal",
        FailureKind.NO_GEOMETRY,
        "The design's build failed: «build() returned no solid»",
    )


# --- a working design ----------------------------------------------------------------------------


@pytest.mark.slow
def test_module_level_result_is_built_and_simulated(jobs: Jobs) -> None:
    check(jobs, "module-result", None)
    r = jobs.results["module-result"]
    m = r.metrics
    assert m["sim_time_s"] == pytest.approx(1.0)
    assert m["steps"] == 500
    cube = m["parts"]["cube"]
    assert cube["mass_kg"] == pytest.approx(1e-3, rel=1e-3)  # 10 mm cube, default 1000 kg/m³
    assert cube["initial_position_mm"] == pytest.approx([0, 0, 20], abs=1e-6)
    assert cube["final_position_mm"][2] == pytest.approx(5.0, abs=1.0)  # resting on the floor
    assert set(m["resources"]) == {"build_design", "physics"}
    assert r.video_url is None
    assert {"geometry", "logs", "report", "mjcf"} <= set(r.artifact_urls)
    phases = [p.phase for p in jobs.progress["module-result"]]
    assert phases[0] == "build"
    assert len(phases) > 1 and phases[-1] != "build"  # the physics child's progress came through
    assert jobs.store is not None
    stored = (jobs.root / "artifacts" / "module-result" / "result.json").read_text()
    assert SimulationResult.model_validate_json(stored) == r


# --- hygiene -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_jobs_work_in_the_system_temp_dir_and_remove_it(jobs: Jobs) -> None:
    reason = check(jobs, "cwd", FailureKind.USER_CODE_ERROR)
    prefix = "The design's build failed: «RuntimeError: cwd="
    cwd, job = reason.removeprefix(prefix).split(" (design.py")[0].split(" job=")
    workdir = jobs.workdirs["simjail-cwd-"]
    assert cwd == "/tmp"  # the jail's own scratch tmpfs
    # The bind's source, relative to the root of its filesystem (all of it when /tmp is on /).
    assert str(workdir / "build-design").endswith(job) and job.endswith("/build-design")
    assert workdir.parent == jobs.tmpdir
    assert set(jobs.workdirs) == {f"simjail-{name}-" for name in DESIGNS}
    assert [p for p in jobs.workdirs.values() if p.exists()] == []
    assert jobs.before == [] and jobs.after == []


@pytest.mark.slow
def test_no_child_process_remains(jobs: Jobs) -> None:
    assert jobs.children_after == []
    assert jobs.leftover_processes == []


@pytest.mark.slow
def test_every_result_was_stored(jobs: Jobs) -> None:
    assert jobs.errors == {}
    for name, r in jobs.results.items():
        stored = jobs.root / "artifacts" / name / "result.json"
        assert SimulationResult.model_validate_json(stored.read_text()) == r
        assert r.artifact_urls["logs"].startswith("file://")


# --- refused before any child starts -------------------------------------------------------------


def test_limits_above_the_policy_are_an_invalid_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simjail_dirs: Callable[[Path], list[str]]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    earlier = {p.pid for p in psutil.Process().children()}
    settings = Settings(data_dir=tmp_path, physics_wall_s=60)
    req = request("too-long", DESIGNS["zerodiv"], limits=Limits(wall_s=61))
    with pytest.raises(InvalidRequest) as exc:
        pipeline.run_request(req, settings, LocalStore(tmp_path / "a"))
    assert exc.value.message.startswith("options.limits.wall_s: 61.0 is above")
    assert simjail_dirs(tmp_path) == []
    assert [p for p in psutil.Process().children() if p.pid not in earlier] == []


def test_unreadable_uri_is_an_invalid_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simjail_dirs: Callable[[Path], list[str]]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    missing = tmp_path / "nope.py"
    req = SimulationRequest(request_id="u", design=CadSource(uri=missing.as_uri()))
    with pytest.raises(InvalidRequest, match=r"^design\.uri: cannot read"):
        pipeline.run_request(req, Settings(data_dir=tmp_path), LocalStore(tmp_path / "a"))
    assert simjail_dirs(tmp_path) == []


# --- the policy digest ---------------------------------------------------------------------------


def _expected_digest(policy_dir: Path, settings: Settings) -> str:
    """The digest recomputed from its definition (sandbox/README.md): sha256 of the canonical
    JSON of the launcher, every policy file's sha256, each jail's effective limits (the job's,
    never above the file's) and the job's own limits."""

    def ceiling(jail: str, key: str) -> int:
        text = (policy_dir / "sandbox" / f"{jail}.cfg").read_text()
        m = re.search(rf"^{key}:\s*(\d+)", text, re.M)
        assert m, key
        return int(m.group(1))

    lim = settings.limits

    def jail(name: str, wall: float, cpu: float, mb: int) -> dict[str, int]:
        return {
            "cgroup_mem_max": min(mb * 2**20, ceiling(name, "cgroup_mem_max")),
            "cgroup_pids_max": ceiling(name, "cgroup_pids_max"),
            # The supervisor ends a run at its budget; RLIMIT_CPU is a backstop above it.
            "rlimit_cpu": min(math.ceil(cpu + max(2.0, 0.1 * cpu)), ceiling(name, "rlimit_cpu")),
            "time_limit": min(math.ceil(wall), ceiling(name, "time_limit")),
        }

    files = sorted((policy_dir / "sandbox").glob("*.cfg")) + sorted(
        (policy_dir / "seccomp").glob("*.kafel")
    )
    record = {
        "launcher": "nsjail-zygote" if settings.reuse.warm else "nsjail",
        "files": {
            f.relative_to(policy_dir).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files
        },
        "jails": {
            "build": jail("build", lim.build_wall_s, lim.build_cpu_s, lim.memory_mb),
            "physics": jail(
                "physics", lim.physics_wall_s, lim.physics_cpu_s, lim.physics_memory_mb
            ),
        },
        "job": lim.model_dump(),
    }
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.slow
def test_the_policy_digest_covers_the_policy_files_and_the_limits(
    jail_tmp: Callable[[str], Path],
) -> None:
    """A result's policy_digest is the recomputed digest; editing cgroup_pids_max in build.cfg,
    flipping one byte of a comment, or tightening a limit each change the digest in the result."""
    from worker.sandbox.policy import default_root

    root = jail_tmp("digest")
    policy = root / "policy"
    for d in ("sandbox", "seccomp"):
        shutil.copytree(default_root() / d, policy / d)
    store = LocalStore(root / "artifacts")
    settings = Settings(data_dir=root / "data", policy_dir=policy)

    def digest(s: Settings) -> str:
        r = pipeline.run_request(request(f"d-{uuid.uuid4().hex[:6]}", "result = None"), s, store)
        assert r.failure == FailureKind.NO_GEOMETRY  # the build jail ran with this policy
        return r.policy_digest

    seen = [digest(settings)]
    assert seen[0] == _expected_digest(policy, settings)
    cfg = policy / "sandbox" / "build.cfg"
    text = cfg.read_text()
    assert "\ncgroup_pids_max: 64 " in text
    cfg.write_text(text.replace("\ncgroup_pids_max: 64 ", "\ncgroup_pids_max: 63 "))
    seen.append(digest(settings))
    assert seen[-1] == _expected_digest(policy, settings)
    cfg.write_text(cfg.read_text().replace("# nsjail policy", "# Nsjail policy", 1))
    seen.append(digest(settings))
    tighter = settings.replace(max_triangles=1000)
    seen.append(digest(tighter))
    assert seen[-1] == _expected_digest(policy, tighter)
    assert len(set(seen)) == len(seen), seen

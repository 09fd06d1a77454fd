"""The real `simjail run` command: exit codes, --json output, request validation naming the bad
field, and no job directory or process left behind.

Every invocation runs once per module, all at once (each with its own TMPDIR), and the tests then
check one invocation each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.models.simulation import FailureKind, SimulationResult

SIMJAIL = Path(sys.executable).parent / "simjail"

FILES = {
    "drop.py": """\
        from build123d import Box, Pos

        def build():
            block = Pos(0, 0, 100) * Box(20, 20, 20)
            block.label = "block"
            return block
        """,
    "zerodiv.py": """\
        def build():
            return 1 / 0
        """,
    "unknown-field.yaml": """\
        target: block
        zones:
          - {name: pad, kind: goal, min: [-50, -50, 0], max: [50, 50, 50]}
        colour: red
        """,
    "unknown-nested.yaml": """\
        target: block
        zones:
          - {name: pad, kind: goal, min: [-50, -50, 0], max: [50, 50, 50], colour: red}
        """,
    "min-max.json": json.dumps(
        {
            "target": "block",
            "zones": [{"name": "pad", "kind": "goal", "min": [0, 0, 5], "max": [1, 1, 5]}],
        }
    ),
    "cwd.py": """\
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
    "_scratch.py": """\
        def build():
            return 1 / 0
        """,
    ".hidden/design.py": """\
        def build():
            return 1 / 0
        """,
    "list.yaml": "- 1\n- 2\n",
    "not-a-file": "",  # becomes a regular file, used as a parent directory below
}

# name -> argv after `simjail`; `{d}` is the directory holding FILES.
CASES: dict[str, list[str]] = {
    "success-json": ["run", "{d}/drop.py", "--json", "--no-render", "--duration", "1"],
    "fail-json": ["run", "{d}/zerodiv.py", "--json", "--no-render", "--duration", "1"],
    "cwd-json": ["run", "{d}/cwd.py", "--json", "--no-render"],
    "underscore-name": ["run", "{d}/_scratch.py", "--json", "--no-render"],
    "dot-dir-design": ["run", "{d}/.hidden/design.py", "--json", "--no-render"],
    "fail-text": ["run", "{d}/zerodiv.py", "--no-render", "--duration", "1"],
    "objectives-unknown": ["run", "{d}/drop.py", "--objectives", "{d}/unknown-field.yaml"],
    "objectives-unknown-nested": ["run", "{d}/drop.py", "--objectives", "{d}/unknown-nested.yaml"],
    "objectives-min-max": ["run", "{d}/drop.py", "--objectives", "{d}/min-max.json", "--json"],
    "objectives-not-mapping": ["run", "{d}/drop.py", "--objectives", "{d}/list.yaml"],
    "duration-over-cap": ["run", "{d}/drop.py", "--duration", "61", "--json"],
    "missing-design": ["run", "{d}/absent.py", "--json", "--no-render"],
    "missing-objectives": ["run", "{d}/drop.py", "--objectives", "{d}/absent.yaml"],
    "usage-no-args": [],
    "usage-no-design": ["run"],
    "usage-bad-duration": ["run", "{d}/drop.py", "--duration", "soon"],
    "usage-unknown-flag": ["run", "{d}/drop.py", "--fast"],
    "usage-unknown-command": ["fly", "{d}/drop.py"],
    "store-unwritable": ["run", "{d}/zerodiv.py", "--out", "{d}/not-a-file/out", "--no-render"],
    "policy-show": ["policy", "show"],
}


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    tmpdir: Path
    before: list[str]
    after: list[str]
    leftover_processes: list[str]


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    jail_tmp: Callable[[str], Path],
    simjail_dirs: Callable[[Path], list[str]],
    processes_under: Callable[[Path], list[str]],
) -> dict[str, Run]:
    files = tmp_path_factory.mktemp("cli-files")
    for name, text in FILES.items():
        (files / name).parent.mkdir(exist_ok=True)
        (files / name).write_text(textwrap.dedent(text))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJAIL_")}

    def one(name: str) -> Run:
        root = jail_tmp(f"cli-{name}")  # nsjail binds the job dirs as uid 65534
        tmpdir = root / "tmp"
        tmpdir.mkdir()
        env = {**base_env, "TMPDIR": str(tmpdir), "XDG_DATA_HOME": str(root / "data")}
        argv = [str(SIMJAIL)] + [a.format(d=files) for a in CASES[name]]
        if CASES[name][:1] == ["run"] and "--out" not in argv:
            argv += ["--out", str(root / "artifacts")]
        before = simjail_dirs(tmpdir)
        p = subprocess.run(
            argv, env=env, cwd=root, capture_output=True, text=True, timeout=300, check=False
        )
        return Run(
            p.returncode, p.stdout, p.stderr, tmpdir, before, simjail_dirs(tmpdir),
            processes_under(root),
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {name: pool.submit(one, name) for name in CASES}
        return {name: f.result() for name, f in futures.items()}


def json_result(run: Run) -> SimulationResult:
    """stdout is exactly one JSON object, and it is a SimulationResult."""
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    assert isinstance(json.loads(lines[0]), dict)
    return SimulationResult.model_validate_json(run.stdout)


def invalid(run: Run, *needles: str) -> None:
    """Exit 2, nothing on stdout, and stderr says what is wrong."""
    assert run.rc == 2, run.stderr
    assert run.stdout == ""
    for n in needles:
        assert n in run.stderr, run.stderr


# --- outcomes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_success_json_exits_0(runs: dict[str, Run]) -> None:
    run = runs["success-json"]
    assert run.rc == 0, run.stderr
    r = json_result(run)
    assert r.outcome == "SUCCESS" and r.failure is None
    assert r.metrics["sim_time_s"] == pytest.approx(1.0)
    assert "block" in r.metrics["parts"]
    assert r.video_url is None
    assert r.policy_digest.startswith("sha256:")
    assert r.artifact_urls["report"].startswith("file://")
    report = Path(r.artifact_urls["report"].removeprefix("file://"))
    assert report.is_file() and report.is_relative_to(run.tmpdir.parent / "artifacts")


@pytest.mark.slow
def test_policy_show_prints_the_digest_results_carry(runs: dict[str, Run]) -> None:
    """Same settings, same policy, same name, same value: `policy show` and a result agree."""
    show = runs["policy-show"]
    assert show.rc == 0, show.stderr
    (line,) = [ln for ln in show.stdout.splitlines() if ln.startswith("policy digest:")]
    assert line.split()[2] == json_result(runs["success-json"]).policy_digest


def test_fail_json_exits_1(runs: dict[str, Run]) -> None:
    run = runs["fail-json"]
    assert run.rc == 1, run.stderr
    r = json_result(run)
    assert (r.outcome, r.failure) == ("FAIL", FailureKind.USER_CODE_ERROR)
    assert r.reason == (
        "The design's build failed: «ZeroDivisionError: division by zero (design.py, line 2, "
        "in build)»"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "prefix"), [("underscore-name", "scratch-"), ("dot-dir-design", "hidden-design-")]
)
def test_request_id_from_any_file_name_is_valid(
    runs: dict[str, Run], name: str, prefix: str
) -> None:
    """`_scratch.py` or `.hidden/design.py` must not make the derived request id invalid."""
    run = runs[name]
    assert run.rc == 1, run.stderr
    r = json_result(run)
    assert r.failure == FailureKind.USER_CODE_ERROR
    key = Path(r.artifact_urls["report"].removeprefix("file://")).parent.name
    assert key.startswith(prefix)


@pytest.mark.slow
def test_fail_text_exits_1_with_a_readable_verdict(runs: dict[str, Run]) -> None:
    run = runs["fail-text"]
    assert run.rc == 1, run.stderr
    first = run.stdout.splitlines()[0]
    assert first.startswith(
        "FAIL (USER_CODE_ERROR): The design's build failed: «ZeroDivisionError: division by zero"
    )
    assert "report" in run.stdout
    assert "\x1b" not in run.stdout + run.stderr  # not a terminal: no colour, no bar
    # Plain progress lines on stderr, one per phase the job went through (a build that fails
    # goes straight to storing its result).
    phases = [ln for ln in run.stderr.splitlines() if ln.startswith("[")]
    assert phases == ["[1/5] build", "[5/5] store"]


@pytest.mark.slow
def test_json_output_has_no_progress_lines(runs: dict[str, Run]) -> None:
    run = runs["success-json"]
    assert not [ln for ln in run.stderr.splitlines() if ln.startswith("[")]


@pytest.mark.slow
def test_on_a_terminal_run_shows_a_progress_bar_and_a_coloured_summary(
    jail_tmp: Callable[[str], Path],
) -> None:
    """A real pseudo-terminal: stdout and stderr are a tty, as for a person."""
    import pty
    import select

    root = jail_tmp("cli-pty")
    (root / "tmp").mkdir()
    design = root / "drop.py"
    design.write_text(textwrap.dedent(FILES["drop.py"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJAIL_")}
    env.update(TMPDIR=str(root / "tmp"), XDG_DATA_HOME=str(root / "data"), TERM="xterm")
    env.pop("NO_COLOR", None)
    argv = [str(SIMJAIL), "run", str(design), "--duration", "1", "--out", str(root / "out")]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=root
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            proc.kill()
            pytest.fail("simjail run hung on a terminal")
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode()
    for n, phase in enumerate(("build", "compile", "simulate", "render", "store"), 1):
        assert f"{n}/5 {phase}" in screen  # the bar went through every phase
    assert "\u2588" in screen and "\r\x1b[2K" in screen  # drawn in place
    assert "\x1b[1;32mSUCCESS\x1b[0m: The simulation ran 1.00 s and stayed stable." in screen
    for name in ("report.html", "poster.png", "contact.png", "video.mp4", "plots.svg"):
        assert name in screen
    assert '"event"' not in screen  # no log lines in the way of the bar


@pytest.mark.slow
def test_unwritable_store_is_an_infrastructure_error(runs: dict[str, Run]) -> None:
    run = runs["store-unwritable"]
    assert run.rc == 3, run.stderr
    assert "simjail: infrastructure error: cannot write" in run.stderr
    assert run.stdout == ""


# --- invalid requests ----------------------------------------------------------------------------


@pytest.mark.slow
def test_objectives_unknown_field_exits_2_naming_it(runs: dict[str, Run]) -> None:
    invalid(runs["objectives-unknown"], "objectives.colour: Extra inputs are not permitted")


@pytest.mark.slow
def test_objectives_unknown_nested_field_exits_2_naming_it(runs: dict[str, Run]) -> None:
    invalid(
        runs["objectives-unknown-nested"],
        "objectives.zones.0.colour: Extra inputs are not permitted",
    )


@pytest.mark.slow
def test_objectives_min_not_below_max_exits_2_naming_it(runs: dict[str, Run]) -> None:
    invalid(
        runs["objectives-min-max"],
        "objectives.zones.0: Value error, min.z (5.0) must be smaller than max.z (5.0)",
    )


@pytest.mark.slow
def test_objectives_not_a_mapping_exits_2(runs: dict[str, Run]) -> None:
    invalid(runs["objectives-not-mapping"], "objectives:", "must hold a mapping")


@pytest.mark.slow
def test_duration_over_the_cap_exits_2_naming_it(runs: dict[str, Run]) -> None:
    invalid(runs["duration-over-cap"], "options.duration_s: Input should be less than or equal")


@pytest.mark.slow
def test_missing_design_exits_2(runs: dict[str, Run]) -> None:
    invalid(runs["missing-design"], "simjail: design: cannot read", "absent.py")


@pytest.mark.slow
def test_missing_objectives_exits_2(runs: dict[str, Run]) -> None:
    invalid(runs["missing-objectives"], "simjail: objectives: cannot read", "absent.yaml")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("usage-no-args", "required: command"),
        ("usage-no-design", "required: design"),
        ("usage-bad-duration", "argument --duration: invalid float value: 'soon'"),
        ("usage-unknown-flag", "unrecognized arguments: --fast"),
        ("usage-unknown-command", "invalid choice: 'fly'"),
    ],
)
def test_usage_errors_exit_2(runs: dict[str, Run], name: str, needle: str) -> None:
    invalid(runs[name], "usage: simjail", needle)


# --- hygiene -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_no_job_dir_or_process_remains(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert run.before == [] and run.after == []
    assert run.leftover_processes == []


@pytest.mark.slow
def test_jobs_work_in_the_temp_dir_they_were_given(runs: dict[str, Run]) -> None:
    """The hygiene check above looks in TMPDIR: prove the job really worked there."""
    run = runs["cwd-json"]
    assert run.rc == 1, run.stderr
    reason = json_result(run).reason
    prefix = "The design's build failed: «RuntimeError: cwd="
    cwd, job = reason.removeprefix(prefix).split(" (design.py")[0].split(" job=")
    assert cwd == "/tmp"  # the jail's own scratch tmpfs
    # The bind's source, relative to the root of its filesystem (all of it when /tmp is on /).
    workdir = next(p for p in Path(job).parents if p.name.startswith("simjail-cwd-"))
    assert Path(job).name == "build-design" and Path(job).parent == workdir
    assert str(run.tmpdir / workdir.name / "build-design").endswith(job)
    assert not (run.tmpdir / workdir.name).exists()

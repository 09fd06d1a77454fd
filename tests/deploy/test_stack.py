"""The deployment as an operator runs it, with Podman: the image built from the Dockerfile on a
Debian base made here from the Debian package registry (deploy/make-base.sh), the compose stack
(deploy/compose.yaml: the Temporal server, the S3 store, two workers) started by podman-compose,
the demo and hostile designs submitted with `simjail submit` through the stack's Temporal
server, a worker killed mid-job and the job finished by the other, the workers' metrics scraped
over the stack's network, the worker refusing to start in too-restricted containers, and
nothing left behind.

Kept on purpose between runs, so a second run rebuilds only what changed (README.md,
Operations): the base image `localhost/simjail-base:trixie`, the images `localhost/simjail:test`
and `localhost/simjail-devstore:test` and their build layers. Everything else the test makes
(containers, the stack's network and volume, temporary directories) is removed, and checked.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.enums.v1 import EventType

from common.models.simulation import SimulationResult
from worker.loadtest.cases import HOSTILE
from worker.simulation.temporal.client import connect_local

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
COMPOSE = ROOT / "deploy" / "compose.yaml"
VENV_BIN = Path(sys.executable).parent
SIMJAIL = VENV_BIN / "simjail"
PODMAN_COMPOSE = VENV_BIN / "podman-compose"
BASE = "localhost/simjail-base:trixie"
IMAGE = "localhost/simjail:test"
DEVSTORE = "localhost/simjail-devstore:test"
BUILD_LOCK = Path("/var/lib/containers")
"""Locked (flock on the directory, no file made) while this test builds images: one image build
at a time on this machine, whichever checkout's tests start it."""
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=16384:16384"]
"""Explicit, as in the compose file: podman's defaults exceed what these machines allow."""
HANG_S = 900.0
"""Generous bounds on waits: they catch a hang, they do not time anything."""

pytestmark = [
    pytest.mark.podman,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("podman") is None or os.geteuid() != 0,
        reason="needs root and podman (./dev test installs it as root)",
    ),
]


def podman(
    *args: str, check: bool = True, timeout: float = HANG_S
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r


_CONF: list[Path] = []


def _env(**extra: str) -> dict[str, str]:
    """This process's environment with podman told to use runc (crun fails on these machines'
    hybrid cgroups) through a containers.conf of the test's own."""
    env = dict(os.environ)
    if _CONF:
        env["CONTAINERS_CONF"] = str(_CONF[0])
    env.update(extra)
    return env


def _image_id(ref: str) -> str | None:
    r = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _ca_bundle() -> Path | None:
    """The CA bundle this machine's own TLS clients trust, handed to pip inside the build as a
    secret (a TLS-intercepting proxy's CA is in it where there is one; it is in no layer)."""
    cafile = ssl.get_default_verify_paths().cafile
    for p in (cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if p and Path(p).is_file():
            return Path(p)
    return None


def _build(tag: str, *target: str) -> float:
    """Build `tag` (the image, or a `--target` of the Dockerfile) on the local base; replace the
    previous image of that tag; return the seconds it took."""
    before = _image_id(tag)
    argv = ["build", *ULIMITS, "--build-arg", f"BASE={BASE}", "-t", tag, *target]
    ca = _ca_bundle()
    if ca is not None:
        argv += ["--secret", f"id=pip-ca,src={ca}"]
    t = time.monotonic()
    r = podman(*argv, str(ROOT), check=False, timeout=1800)
    took = time.monotonic() - t
    assert r.returncode == 0, f"podman build {tag} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    after = _image_id(tag)
    if before is not None and before != after:
        podman("rmi", before, check=False)  # the previous build's image; its layers may stay
    return took


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, float]]:
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text('[engine]\nruntime = "runc"\n')
    _CONF[:] = [conf]
    took: dict[str, float] = {}
    BUILD_LOCK.mkdir(parents=True, exist_ok=True)  # podman's own storage root
    lock = os.open(BUILD_LOCK, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _image_id(BASE) is None:
            t = time.monotonic()
            r = subprocess.run(
                [str(ROOT / "deploy" / "make-base.sh"), "trixie", BASE],
                capture_output=True, text=True, timeout=1800, env=_env(),
            )  # fmt: skip
            assert r.returncode == 0, f"make-base.sh failed:\n{r.stderr[-3000:]}"
            took["base"] = time.monotonic() - t
        took["image"] = _build(IMAGE)
        took["devstore"] = _build(DEVSTORE, "--target", "devstore")
    finally:
        os.close(lock)  # and with it the lock
    print(f"\nimage build seconds: {json.dumps({k: round(v, 1) for k, v in took.items()})}")
    yield took
    _CONF.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    project: str
    temporal: str
    """host:port of the Temporal frontend, published on loopback."""
    store_url: str
    env: dict[str, str]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(PODMAN_COMPOSE), "-p", self.project, "-f", str(COMPOSE), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_S, env=self.env)
        if check and r.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} failed:\n{r.stderr[-3000:]}")
        return r

    def containers(self, service: str, *, all_states: bool = False) -> list[str]:
        r = podman(
            "ps", *(["-a"] if all_states else []),
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--format", "{{.Names}}",
        )  # fmt: skip
        return sorted(r.stdout.split())

    def logs(self, name: str) -> str:
        r = podman("logs", name, check=False)
        return r.stdout + r.stderr

    def hostname(self, name: str) -> str:
        return podman("inspect", "--format", "{{.Config.Hostname}}", name).stdout.strip()

    def submit(self, design: Path, *flags: str, wait: bool = True) -> tuple[int, dict[str, Any]]:
        """`simjail submit` from this checkout's venv, as a controller on this machine would."""
        argv = [str(SIMJAIL), "submit", str(design), "--address", self.temporal, "--json"]
        argv += [*flags, *(["--wait"] if wait else [])]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_S)
        assert r.stdout.strip(), (
            f"simjail submit printed nothing (exit {r.returncode}):\n{r.stderr}"
        )
        return r.returncode, json.loads(r.stdout)


def _wait(what: str, ok: Any, timeout_s: float = HANG_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = ok()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)


def _leftovers(project: str) -> dict[str, list[str]]:
    fmt = ["--format", "{{.Name}}"]
    return {
        "containers": podman(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            "{{.Names}}",
        ).stdout.split(),
        "networks": [n for n in podman("network", "ls", *fmt).stdout.split() if project in n],
        "volumes": [v for v in podman("volume", "ls", *fmt).stdout.split() if project in v],
        "pods": [p for p in podman("pod", "ls", *fmt).stdout.split() if project in p],
    }


@pytest.fixture(scope="module")
def stack(images: dict[str, float]) -> Iterator[Stack]:
    project = f"simjailtest{os.getpid()}"
    temporal_port, ui_port, store_port = _free_port(), _free_port(), _free_port()
    env = _env(
        SIMJAIL_IMAGE=IMAGE,
        SIMJAIL_DEVSTORE_IMAGE=DEVSTORE,
        SIMJAIL_TEMPORAL_PORT=str(temporal_port),
        SIMJAIL_TEMPORAL_UI_PORT=str(ui_port),
        SIMJAIL_STORE_PORT=str(store_port),
    )
    s = Stack(project, f"127.0.0.1:{temporal_port}", f"http://127.0.0.1:{store_port}", env)
    try:
        t = time.monotonic()
        s.compose("up", "-d")
        workers = _wait("two worker containers", lambda: len(s.containers("worker")) == 2)
        assert workers
        for name in s.containers("worker"):
            _wait(f"{name} to start serving", lambda n=name: '"worker.start"' in s.logs(n))
        print(f"stack up in {time.monotonic() - t:.1f} s")
        yield s
    finally:
        s.compose("down", "-v", "-t", "5", check=False)
        left = _leftovers(project)
        for name in left["containers"]:
            podman("rm", "-f", name, check=False)
        for net in left["networks"]:
            podman("network", "rm", "-f", net, check=False)
        for vol in left["volumes"]:
            podman("volume", "rm", "-f", vol, check=False)
        assert left == {"containers": [], "networks": [], "volumes": [], "pods": []}, left


def _ramp(*extra: str) -> tuple[Path, list[str]]:
    ramp = EXAMPLES / "ramp"
    flags = ["--environment", str(ramp / "environment.py")]
    return ramp / "design.py", [*flags, "--objectives", str(ramp / "objectives.yaml"), *extra]


def test_the_demo_succeeds_and_hostile_designs_fail_through_the_stack(
    stack: Stack, tmp_path: Path
) -> None:
    design, flags = _ramp("--request-id", f"stack-demo-{stack.project}")
    hostile = {h.name: h for h in HOSTILE}
    jobs = {"demo": (design, flags)}
    for name in ("ptrace", "forged_success_frame"):
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(hostile[name].code))
        jobs[name] = (path, ["--no-render", "--request-id", f"stack-{name}-{stack.project}"])
    # All three at once, as a controller submits: the two workers share them.
    procs = {
        name: subprocess.Popen(
            [
                str(SIMJAIL),
                "submit",
                str(path),
                "--address",
                stack.temporal,
                "--json",
                "--wait",
                *f,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (path, f) in jobs.items()
    }
    done = {name: p.communicate(timeout=HANG_S) for name, p in procs.items()}
    results = {name: SimulationResult.model_validate_json(out) for name, (out, _) in done.items()}
    assert procs["demo"].returncode == 0, done["demo"][1][-2000:]
    assert results["demo"].outcome == "SUCCESS", results["demo"].reason
    for name in ("ptrace", "forged_success_frame"):
        assert procs[name].returncode == 1, done[name][1][-2000:]
        assert results[name].outcome == "FAIL"
        assert results[name].failure == hostile[name].expected.failure, results[name].reason
    # Both replicas answer to the service's DNS name on the stack's network (what
    # deploy/prometheus.yml scrapes), asked from the temporal container, which has a Python.
    (temporal,) = stack.containers("temporal")
    resolve = "import socket; print(len({a[4][0] for a in socket.getaddrinfo('worker', 9464)}))"
    assert podman("exec", temporal, "python3", "-c", resolve).stdout.strip() == "2"
    # The demo's artifacts are in the stack's store under the lasting keys the result names.
    s3 = boto3.client(
        "s3", endpoint_url=stack.store_url, region_name="us-east-1",
        aws_access_key_id="simjail-dev", aws_secret_access_key="simjail-dev",
    )  # fmt: skip
    uris = results["demo"].artifact_uris
    assert {"video", "report", "result"} <= set(uris), uris
    for uri in uris.values():
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0, uri


def test_a_job_whose_worker_is_killed_finishes_on_the_other(stack: Stack) -> None:
    design, flags = _ramp("--full-video", "--request-id", f"stack-kill-{stack.project}")
    code, started = stack.submit(design, *flags, wait=False)
    assert code == 0, started
    wid = started["workflow_id"]
    hosts = {stack.hostname(n): n for n in stack.containers("worker")}

    async def go() -> tuple[str, SimulationResult, str]:
        client = await connect_local(stack.temporal)
        handle = client.get_workflow_handle(wid, result_type=SimulationResult)

        async def running_on() -> str | None:
            desc = await handle.describe()
            for act in desc.raw_description.pending_activities:
                if act.last_worker_identity and act.HasField("last_heartbeat_time"):
                    return str(act.last_worker_identity)
            return None

        deadline = time.monotonic() + HANG_S
        identity = None
        while identity is None:
            assert time.monotonic() < deadline, "the job never started heartbeating"
            identity = await running_on()
            await asyncio.sleep(0.5)
        victim = hosts[identity.split("@", 1)[1]]
        podman("kill", victim)  # SIGKILL, mid-job: no graceful shutdown, no restart
        result = await asyncio.wait_for(handle.result(), HANG_S)
        finisher = ""
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = event.activity_task_started_event_attributes
                finisher = attrs.identity
                assert attrs.attempt >= 2, "the job's first attempt cannot have completed"
        return victim, result, finisher

    victim, result, finisher = asyncio.run(go())
    assert result.outcome == "SUCCESS", result.reason
    survivor = hosts[finisher.split("@", 1)[1]]
    assert survivor != victim
    assert podman("inspect", "--format", "{{.State.Status}}", victim).stdout.strip() == "exited"
    # The survivor's metrics, scraped over the stack's network by name, as Prometheus would
    # (from the temporal container, which has a Python): it counts the job it finished.
    (temporal,) = stack.containers("temporal")
    scrape = (
        "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
        f"'http://{survivor}:9464/metrics', timeout=30).read().decode())"
    )
    text = podman("exec", temporal, "python3", "-c", scrape).stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {
        (s.labels["outcome"], s.labels["failure"]): s.value
        for s in families["simjail_jobs"].samples
        if s.name == "simjail_jobs_total"
    }
    assert jobs.get(("SUCCESS", ""), 0) >= 1, jobs
    assert any(name.startswith("temporal_") for name in families), sorted(families)


UNMASKED = ("--security-opt", "unmask=ALL")


def _refusal(*opts: str) -> subprocess.CompletedProcess[str]:
    return podman(
        "run", "--rm", "--user", "0", *ULIMITS, *opts, IMAGE,
        "worker", "--address", "127.0.0.1:1",
        check=False, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "lack"),
    [
        ((), "/proc is masked"),
        (UNMASKED, "seccomp profile forbids sethostname"),
        ((*UNMASKED, "--security-opt", "seccomp=unconfined"), "cgroup filesystem is read-only"),
        (
            ("--cap-drop", "SETGID", *UNMASKED, "--security-opt", "seccomp=unconfined"),
            "lacks CAP_SETGID",
        ),
    ],
    ids=["defaults", "unmasked-proc", "no-seccomp-ro-cgroups", "no-setgid"],
)
def test_the_worker_refuses_a_too_restricted_container_naming_what_it_lacks(
    images: dict[str, float], opts: tuple[str, ...], lack: str
) -> None:
    r = _refusal(*opts)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "(in a podman container)" in r.stderr, r.stderr[-2000:]
    assert lack in r.stderr, r.stderr[-2000:]


def test_the_least_the_worker_container_needs_is_what_the_readme_says(
    images: dict[str, float],
) -> None:
    # The honest twin of the refusals: README.md's least-privilege recipe for podman on cgroup
    # v1 (capabilities SETUID, SETGID, CHOWN, SYS_ADMIN for the read-write cgroup remount and
    # the seccomp profile's sethostname, an unmasked /proc) passes every check of the policy.
    remount = (
        "for c in memory pids cpu cpuacct; do mount -o remount,rw,bind /sys/fs/cgroup/$c; done"
        " && exec simjail policy check"
    )
    r = podman(
        "run", "--rm", "--user", "0", *ULIMITS, "--cap-drop", "ALL",
        "--cap-add", "SETUID,SETGID,CHOWN,SYS_ADMIN", "--security-opt", "unmask=ALL",
        "--entrypoint", "sh", IMAGE, "-c", remount,
        check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "every policy line checked holds" in r.stdout


def test_the_image_runs_simjail_as_a_non_root_user_by_default(images: dict[str, float]) -> None:
    r = podman("run", "--rm", *ULIMITS, "--entrypoint", "sh", IMAGE, "-c", "id -u; simjail -h")
    uid, *rest = r.stdout.splitlines()
    assert uid == "65534"
    assert "usage: simjail" in "\n".join(rest)
    inspect = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert inspect["Entrypoint"] == ["simjail"]
    assert any(e.startswith("SIMJAIL_POLICY_DIR=") for e in inspect["Env"])
    # Installed, not editable: the code is in the venv's site-packages.
    where = podman(
        "run", "--rm", *ULIMITS, "--entrypoint", "python3", IMAGE,
        "-c", "import worker, sys; print(worker.__file__, sys.version_info >= (3, 12))",
    ).stdout.split()  # fmt: skip
    assert where[0].startswith("/opt/simjail/lib/python3") and "site-packages" in where[0]
    assert where[1] == "True"


_TREE_DIGEST = """
import hashlib, pathlib, sys
root = pathlib.Path(sys.argv[1])
h = hashlib.sha256()
for p in sorted(root.rglob("*.py")):
    if "__pycache__" not in p.parts:
        h.update(p.relative_to(root).as_posix().encode() + b"\\0" + p.read_bytes())
print(h.hexdigest())
"""


def test_the_image_holds_the_checkouts_code(images: dict[str, float]) -> None:
    """A RUN that bind-mounted the new wheel once kept the cached layer of an old one: the stack
    judged with code the checkout no longer had (its requests were refused as unknown fields)."""
    ours = {}
    for pkg in ("worker", "common"):
        argv = [sys.executable, "-c", _TREE_DIGEST, str(ROOT / "src" / pkg)]
        ours[pkg] = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    for pkg, digest in ours.items():
        site = f"$(python3 -c 'import {pkg}, os; print(os.path.dirname({pkg}.__file__))')"
        r = podman(
            "run", "--rm", *ULIMITS, "--entrypoint", "sh", IMAGE, "-c",
            f"python3 -c {shlex.quote(_TREE_DIGEST)} {site}",
        )  # fmt: skip
        assert r.stdout.strip() == digest, pkg

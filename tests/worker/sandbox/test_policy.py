"""The policy files: their digest covers every byte of them, the ceilings read from them are the
values nsjail itself applies, and the real files compile and run a jail of each kind."""

from __future__ import annotations

import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker.sandbox.cgroups import cpu_ceiling_ms_per_sec
from worker.sandbox.launcher import LaunchSpec
from worker.sandbox.nsjail import JAIL_UID, NsjailLauncher
from worker.sandbox.policy import JAILS, TIGHTENABLE, Policy, PolicyError, default_root
from worker.sandbox.protocol import ProgressFrame
from worker.sandbox.supervisor import LaunchError, classify, run_child

REAL = Policy(default_root())
Spec = Callable[..., LaunchSpec]


@pytest.fixture
def copy(tmp_path: Path) -> Policy:
    """A byte-identical copy of the project's policy files."""
    for d in ("sandbox", "seccomp"):
        shutil.copytree(REAL.root / d, tmp_path / d)
    return Policy(tmp_path)


# --- digest --------------------------------------------------------------------------------------


def test_the_digest_depends_on_the_files_not_on_where_they_are(copy: Policy) -> None:
    assert REAL.digest().startswith("sha256:")
    assert copy.digest() == REAL.digest()


@pytest.mark.parametrize(
    "rel", [f.relative_to(REAL.root).as_posix() for f in REAL.files()], ids=str
)
def test_changing_any_byte_of_any_policy_file_changes_the_digest(copy: Policy, rel: str) -> None:
    path = copy.root / rel
    original = path.read_bytes()
    seen = {copy.digest()}
    for pos in (0, len(original) // 2, len(original) - 1):
        changed = bytearray(original)
        changed[pos] ^= 0x01
        path.write_bytes(bytes(changed))
        seen.add(copy.digest())
    path.write_bytes(original + b" ")  # even trailing whitespace
    seen.add(copy.digest())
    assert len(seen) == 5
    path.write_bytes(original)
    assert copy.digest() == REAL.digest()


def test_adding_or_renaming_a_policy_file_changes_the_digest(copy: Policy) -> None:
    before = copy.digest()
    extra = copy.root / "seccomp" / "extra.kafel"
    extra.write_text("")
    added = copy.digest()
    extra.rename(copy.root / "seccomp" / "other.kafel")
    renamed = copy.digest()
    assert len({before, added, renamed}) == 3


def test_no_policy_files_is_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no policy files"):
        Policy(tmp_path).digest()


# --- configs and ceilings ------------------------------------------------------------------------


def test_config_of_an_unknown_jail_is_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"unknown jail 'network'"):
        REAL.config("network")
    with pytest.raises(PolicyError, match=r"unknown jail"):
        REAL.ceilings("../build")


def test_a_missing_config_is_policy_error(copy: Policy) -> None:
    (copy.root / "sandbox" / "physics.cfg").unlink()
    with pytest.raises(PolicyError, match=r"physics.cfg is missing"):
        copy.config("physics")


@pytest.mark.parametrize("key", TIGHTENABLE)
def test_a_config_without_a_ceiling_is_policy_error(copy: Policy, key: str) -> None:
    cfg = copy.config("build")
    lines = cfg.read_text().splitlines()
    cfg.write_text("\n".join(ln for ln in lines if not ln.startswith(f"{key}:")))
    with pytest.raises(PolicyError, match=f"sets no {key}"):
        copy.ceilings("build")


@pytest.mark.parametrize("jail", JAILS)
def test_ceilings_parse_the_real_files(jail: str) -> None:
    ceil = REAL.ceilings(jail)
    assert set(ceil) == set(TIGHTENABLE)
    assert all(isinstance(v, int) and v > 0 for v in ceil.values())
    assert REAL.seccomp_file(jail) == REAL.root / "seccomp" / "jail.kafel"
    assert REAL.seccomp_file(jail).is_file()


@pytest.mark.parametrize("jail", JAILS)
def test_the_ceilings_are_what_nsjail_applies(
    jail: str, code_launcher: Any, spec: Spec, jail_job: Path, jail_tmp: Callable[[str], Path]
) -> None:
    """Run a jail without the per-job flags that tighten the ceilings, and read what nsjail
    made of the config: its log (time limit), the jail's rlimit (CPU), and nsjail's own
    cgroup while the jail runs (memory, pids)."""

    class Untightened(code_launcher):  # type: ignore[misc,valid-type]
        def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> Any:
            run = super().prepare(spec, frame_fd=frame_fd, log_fd=log_fd)
            argv = run.inner.argv
            for flag in ("--time_limit", "--rlimit_cpu", "--cgroup_mem_max"):
                i = argv.index(flag)
                del argv[i : i + 2]
            return run

    launcher = Untightened(
        """
        import resource
        send({"type": "progress", "phase": "running"})
        time.sleep(0.5)  # while the supervisor reads nsjail's cgroup
        result({"rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)})
        """
    )
    seen: dict[str, int] = {}

    def read_cgroups(_: ProgressFrame) -> None:
        mem, pids, cpu = launcher.runs[0].inner.cgroups.dirs
        (nsjail_mem,) = mem.glob("NSJAIL.*")
        (nsjail_pids,) = pids.glob("NSJAIL.*")
        (nsjail_cpu,) = cpu.glob("NSJAIL.*")
        seen["cgroup_mem_max"] = int((nsjail_mem / "memory.limit_in_bytes").read_text())
        seen["cgroup_pids_max"] = int((nsjail_pids / "pids.max").read_text())
        quota = int((nsjail_cpu / "cpu.cfs_quota_us").read_text())
        period = int((nsjail_cpu / "cpu.cfs_period_us").read_text())
        seen["cgroup_cpu_ms_per_sec"] = quota * 1000 // period

    out_dir = jail_tmp("out") if jail == "physics" else None
    out = run_child(
        launcher,
        spec(jail_job, jail=jail, wall_s=10_000, cpu_s=10_000, out_dir=out_dir),
        on_progress=read_cgroups,
    )
    assert classify(out) is None, (out.stderr, out.jail_log)
    assert out.result is not None
    ceil = REAL.ceilings(jail)
    assert f"time_limit:{ceil['time_limit']}," in out.jail_log
    assert out.result.payload["rlimit_cpu"] == [ceil["rlimit_cpu"]] * 2
    cpu = {"build": 1000, "physics": 2000}[jail]
    held = cpu_ceiling_ms_per_sec()  # a worker held to less (./dev slow-test) gives no more
    assert seen == {
        **{k: ceil[k] for k in ("cgroup_mem_max", "cgroup_pids_max")},
        "cgroup_cpu_ms_per_sec": cpu if held is None else min(cpu, held),
    }
    assert resource.RLIM_INFINITY not in out.result.payload["rlimit_cpu"]


# --- the real files compile and run --------------------------------------------------------------


def test_check_accepts_the_real_policy() -> None:
    NsjailLauncher(REAL).check()


@pytest.mark.parametrize("jail", JAILS)
def test_a_trivial_jail_of_each_kind_runs_under_the_real_policy(
    jail: str, code_launcher: Any, spec: Spec, jail_job: Path, jail_tmp: Callable[[str], Path]
) -> None:
    out_dir = jail_tmp("out") if jail == "physics" else None
    out = run_child(
        code_launcher(
            """
            import errno, socket
            def connect_loopback():
                try:
                    socket.create_connection(("127.0.0.1", 9), timeout=1)
                    return "connected"
                except OSError as e:
                    return errno.errorcode.get(e.errno, str(e))
            def writable(path):
                try:
                    with open(os.path.join(path, "probe"), "w") as f:
                        f.write("x")
                    return True
                except OSError:
                    return False
            result({
                "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(),
                "hostname": socket.gethostname(), "cwd": os.getcwd(),
                "env": sorted(os.environ), "job": sorted(os.listdir("/job")),
                "job_writable": writable("/job"), "tmp_writable": writable("/tmp"),
                "out_writable": writable("/out") if os.path.isdir("/out") else None,
                # /proc/net/dev, not if_nameindex(): that asks over AF_NETLINK, which kills.
                "interfaces": sorted(
                    ln.split(":")[0].strip() for ln in open("/proc/net/dev").readlines()[2:]
                ),
                "loopback": connect_loopback(),
            })
            """
        ),
        spec(jail_job, jail=jail, out_dir=out_dir),
    )
    assert classify(out) is None, (out.stderr, out.jail_log)
    assert out.result is not None
    seen = out.result.payload
    assert (seen["uid"], seen["gid"], seen["pid"]) == (65534, 65534, 1)
    assert seen["hostname"] == "simjail" and seen["cwd"] == "/tmp"
    envars = [
        ln.split('"')[1].split("=")[0]
        for ln in REAL.config(jail).read_text().splitlines()
        if ln.startswith("envar:")
    ]
    assert seen["env"] == sorted(envars)  # nothing of the worker's environment
    assert seen["job"] == ["job.json"]
    assert seen["job_writable"] is False and seen["tmp_writable"] is True
    # A new network namespace: only its own loopback, and that one is left down.
    assert seen["interfaces"] == ["lo"] and seen["loopback"] == "ENETUNREACH"
    if jail == "physics":
        assert out_dir is not None
        assert seen["out_writable"] is True
        assert (out_dir / "probe").read_text() == "x"
        assert (out_dir / "probe").stat().st_uid == JAIL_UID
    else:
        assert seen["out_writable"] is None


def test_a_policy_that_does_not_compile_is_launch_error(
    copy: Policy, code_launcher: Any, spec: Spec, jail_job: Path
) -> None:
    """Kafel wants x86_64 names (DESIGN.md §8): a policy naming `fstat` cannot start any jail,
    and that is an infrastructure fault, reported with kafel's own message."""
    kafel = copy.root / "seccomp" / "jail.kafel"
    kafel.write_text(kafel.read_text().replace("    ptrace,", "    fstat,"))
    with pytest.raises(
        LaunchError, match=r"Could not compile policy: .*Undefined identifier `fstat'"
    ):
        run_child(code_launcher("result({})", copy), spec(jail_job))


def test_a_policy_that_does_not_compile_stops_the_worker_at_check(copy: Policy) -> None:
    """check() starts a probe jail of each kind, so a broken seccomp file fails at worker start
    (fail closed) instead of failing every job later."""
    from worker.sandbox.nsjail import SandboxUnavailable

    kafel = copy.root / "seccomp" / "jail.kafel"
    kafel.write_text(kafel.read_text().replace("    ptrace,", "    fstat,"))
    with pytest.raises(SandboxUnavailable, match=r"build jail does not start.*`fstat'"):
        NsjailLauncher(copy).check()

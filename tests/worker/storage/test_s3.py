"""S3Store over real HTTP against moto's standalone S3 server (a subprocess; boto3 unpatched).

The server's request log is read to check what went over the wire (e.g. that an oversized
object is refused after a HEAD, with no GET)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydantic import ValidationError

from worker.settings import Settings
from worker.storage import LocalStore, StorageError, make_store
from worker.storage.s3 import S3Store

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

CREDS: dict[str, Any] = {"access_key_id": "testing", "secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    endpoint: str
    log: Path

    def requests(self) -> list[str]:
        """Request lines the server has logged so far (`METHOD /path`)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text(errors="replace"))
        return re.findall(r'"([A-Z]+ /[^ ]*) HTTP/1\.[01]"', text)

    def sync_log(self) -> None:
        """Make one request and wait until it is logged, so every earlier one is too."""
        marker = f"/log-sync-{uuid.uuid4().hex}"
        with contextlib.suppress(OSError):  # a 404: it is logged all the same
            urllib.request.urlopen(self.endpoint + marker, timeout=5).close()
        deadline = time.monotonic() + 5
        while not any(marker in r for r in self.requests()):
            assert time.monotonic() < deadline, "the S3 server did not log a request"
            time.sleep(0.02)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"moto server exited: {log.read_text()}"
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto server never answered: {log.read_text()}"
                time.sleep(0.05)
        yield Server(endpoint, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def admin(s3_server: Server) -> S3Client:
    """A plain boto3 client on the server, to set up buckets and look at what was stored."""
    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(admin: S3Client) -> str:
    name = f"simjail-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make(s3_server: Server, bucket: str) -> Callable[..., S3Store]:
    """`make(prefix, **kw)` → an S3Store on the server and this test's bucket (or `bucket=`)."""

    def make(prefix: str = "", *, bucket: str = bucket, **kw: Any) -> S3Store:
        return S3Store(bucket, prefix, **{"endpoint_url": s3_server.endpoint, **CREDS, **kw})

    return make


@pytest.fixture
def objects(admin: S3Client) -> Callable[[S3Store], dict[str, bytes]]:
    """`objects(store)` → every object in the store's bucket, read straight from the server."""

    def objects(store: S3Store) -> dict[str, bytes]:
        listing = admin.list_objects_v2(Bucket=store.bucket)
        return {
            o["Key"]: admin.get_object(Bucket=store.bucket, Key=o["Key"])["Body"].read()
            for o in listing.get("Contents", [])
        }

    return objects


def _fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read(), r.headers["Content-Type"]


def test_put_bytes_then_fetch_the_presigned_url(make: Callable[..., S3Store]) -> None:
    store = make(url_ttl_s=600)
    url = store.put_bytes("req-1/report.md", b"# report\n", "text/markdown")
    assert _fetch(url) == (b"# report\n", "text/markdown")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert _fetch(store.url("req-1/report.md"))[0] == b"# report\n"


def test_put_file_streams_a_multipart_upload(
    make: Callable[..., S3Store], s3_server: Server, tmp_path: Path
) -> None:
    data = os.urandom(9 * 1024 * 1024)  # above the 8 MiB multipart threshold
    src = tmp_path / "video.mp4"
    src.write_bytes(data)
    store = make()
    url = store.put_file("req-2/video.mp4", src, "video/mp4")
    assert _fetch(url) == (data, "video/mp4")
    s3_server.sync_log()
    assert f"POST /{store.bucket}/req-2/video.mp4?uploads" in s3_server.requests()


def test_overwrite_keeps_one_object(
    make: Callable[..., S3Store], objects: Callable[[S3Store], dict[str, bytes]], tmp_path: Path
) -> None:
    store = make()
    store.put_bytes("req-3/logs.txt", b"one", "text/plain")
    store.put_bytes("req-3/logs.txt", b"two", "text/plain")
    src = tmp_path / "three"
    src.write_bytes(b"three")
    store.put_file("req-3/logs.txt", src, "text/plain")
    assert objects(store) == {"req-3/logs.txt": b"three"}


def test_prefix_is_applied(
    make: Callable[..., S3Store], objects: Callable[[S3Store], dict[str, bytes]]
) -> None:
    store = make("/simjail/prod/")
    url = store.put_bytes("req-4/report.md", b"x", "text/markdown")
    assert objects(store) == {"simjail/prod/req-4/report.md": b"x"}
    assert store.s3_uri("req-4/report.md") == f"s3://{store.bucket}/simjail/prod/req-4/report.md"
    assert store.uri("req-4/report.md") == store.s3_uri("req-4/report.md")
    assert urllib.parse.urlsplit(url).path == f"/{store.bucket}/simjail/prod/req-4/report.md"
    assert store.get_bytes("req-4/report.md", 10) == b"x"


@pytest.mark.parametrize("prefix", ["../x", "a//b", ".hidden"])
def test_bad_prefix_is_refused(make: Callable[..., S3Store], prefix: str) -> None:
    with pytest.raises(StorageError, match="invalid S3 prefix"):
        make(prefix)


# The bad keys of test_local.py, plus a trailing newline (which `re.match(...$)` let through).
BAD_KEYS = ["../escape", "r/../../x", "/abs", "", "r//x", ".hidden/x", "r/x\n"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_are_validated_like_local_ones(
    make: Callable[..., S3Store], objects: Callable[[S3Store], dict[str, bytes]], key: str
) -> None:
    store = make()
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"x", "text/plain"),
        lambda: store.put_file(key, Path(__file__), "text/plain"),
        lambda: store.url(key),
        lambda: store.s3_uri(key),
        lambda: store.get_bytes(key, 10),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="invalid artifact key"):
            call()
    assert objects(store) == {}


def test_missing_bucket_is_a_storage_error_naming_it(
    make: Callable[..., S3Store], tmp_path: Path
) -> None:
    store = make(bucket="no-such-bucket-simjail")
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes("r/x", b"x", "text/plain"),
        lambda: store.put_file("r/x", src, "text/plain"),
    ]
    for call in calls:
        with pytest.raises(StorageError) as e:
            call()
        msg = str(e.value)
        assert "s3://no-such-bucket-simjail/r/x" in msg
        assert store.endpoint in msg
        assert "bucket does not exist" in msg
        assert "\n" not in msg and "Traceback" not in msg
    with pytest.raises(StorageError, match=r"no-such-bucket-simjail.*no such object or bucket"):
        store.get_bytes("r/x", 10)


def test_missing_source_file_is_a_storage_error(
    make: Callable[..., S3Store], tmp_path: Path
) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        make().put_file("r/x", tmp_path / "absent", "text/plain")


def test_unreachable_endpoint_fails_within_seconds() -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"  # closed: nothing listens there any more
    store = S3Store("some-bucket", endpoint_url=endpoint, **CREDS)
    start = time.monotonic()
    with pytest.raises(StorageError) as e:
        store.put_bytes("r/x", b"x", "text/plain")
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"took {elapsed:.1f} s"  # a bound on hanging, not a speed target
    msg = str(e.value)
    assert "some-bucket" in msg and endpoint in msg and "unreachable" in msg


@pytest.mark.slow
def test_silent_endpoint_is_a_timeout_not_a_hang() -> None:
    """A server that accepts connections but never answers: the read timeout ends each attempt
    and the retries are bounded."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)  # the kernel accepts; nobody ever reads or writes
        endpoint = f"http://127.0.0.1:{mute.getsockname()[1]}"
        store = S3Store(
            "some-bucket", endpoint_url=endpoint, read_timeout_s=0.5, max_attempts=2, **CREDS
        )
        start = time.monotonic()
        with pytest.raises(StorageError, match="did not answer in time") as e:
            store.put_bytes("r/x", b"x", "text/plain")
        elapsed = time.monotonic() - start
        mute.setblocking(False)
        attempts = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                mute.accept()[0].close()  # one queued connection per attempt
                attempts += 1
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert attempts == 2  # max_attempts counts the first try
    assert "some-bucket" in str(e.value) and endpoint in str(e.value)


def test_get_bytes_reads_small_objects(make: Callable[..., S3Store]) -> None:
    store = make()
    store.put_bytes("src/design.step", b"12345", "application/step")
    assert store.get_bytes("src/design.step", 5) == b"12345"
    with pytest.raises(StorageError, match="no such object"):
        store.get_bytes("src/absent.step", 5)


def test_get_bytes_refuses_a_large_object_without_downloading_it(
    make: Callable[..., S3Store], s3_server: Server
) -> None:
    store = make()
    store.put_bytes("src/big.step", b"x" * 100_000, "application/step")
    with pytest.raises(StorageError, match="100000 bytes, more than the 99999 allowed"):
        store.get_bytes("src/big.step", 99_999)
    s3_server.sync_log()
    path = f"/{store.bucket}/src/big.step"
    sent = [r for r in s3_server.requests() if r.split(" ")[1].split("?")[0] == path]
    assert sent == [f"PUT {path}", f"HEAD {path}"]


def test_make_store_local_by_default(tmp_path: Path) -> None:
    store = make_store(Settings(artifacts_dir=tmp_path))
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path.resolve()


def test_make_store_s3_from_env(
    s3_server: Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SIMJAIL_STORE", "s3")
    monkeypatch.setenv("SIMJAIL_S3_BUCKET", bucket)
    monkeypatch.setenv("SIMJAIL_S3_PREFIX", "jobs")
    monkeypatch.setenv("SIMJAIL_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("SIMJAIL_S3_REGION", "eu-west-1")
    monkeypatch.setenv("SIMJAIL_S3_URL_TTL_S", "120")
    store = make_store(Settings.from_env())
    assert isinstance(store, S3Store)
    url = store.put_bytes("req-5/report.md", b"hi", "text/markdown")
    assert _fetch(url)[0] == b"hi"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert "/eu-west-1/s3/" in query["X-Amz-Credential"][0]
    assert store.s3_uri("req-5/report.md") == f"s3://{bucket}/jobs/req-5/report.md"


def test_make_store_s3_without_bucket_names_the_setting() -> None:
    with pytest.raises(StorageError, match=r"s3_bucket \(SIMJAIL_S3_BUCKET\)"):
        make_store(Settings(store="s3"))
    with pytest.raises(StorageError, match="SIMJAIL_S3_BUCKET"):
        make_store(Settings(store="s3", s3_bucket=""))


@pytest.mark.parametrize("ttl", [0, 7 * 24 * 3600 + 1])
def test_url_lifetime_is_bounded(ttl: int) -> None:
    with pytest.raises(ValidationError, match="s3_url_ttl_s"):
        Settings(s3_url_ttl_s=ttl)


# --- s3:// design and environment sources (worker.job.sources) ----------------------------------


def _request(**sources: str) -> Any:
    from common.models.simulation import SimulationRequest

    return SimulationRequest.model_validate(
        {"request_id": "s3src", **{k: {"uri": v} for k, v in sources.items()}}
    )


def test_s3_sources_are_read_from_the_configured_store(make: Callable[..., S3Store]) -> None:
    store = make("sim/prod")
    store.put_bytes("designs/d.py", b"def build():\n    return None\n", "text/x-python")
    store.put_bytes("designs/part.step", b"ISO-10303-21;", "application/step")
    from worker.job.sources import Source, read_source

    request = _request(
        design=store.s3_uri("designs/d.py"), environment=store.s3_uri("designs/part.step")
    )
    assert read_source(request.design, "design", store) == Source(
        "design", code="def build():\n    return None\n"
    )
    assert read_source(request.environment, "environment", store) == Source(
        "environment", step=b"ISO-10303-21;"
    )


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("s3://another-bucket/sim/prod/designs/d.py", "outside the artifact store"),
        ("s3://{bucket}/elsewhere/d.py", "outside the artifact store"),
        ("s3://{bucket}/sim/production/d.py", "outside the artifact store"),
        ("s3://{bucket}/sim/prod/../d.py", "not a valid key"),
        ("s3://{bucket}/sim/prod/designs/absent.py", "no such object"),
        ("s3://{bucket}/sim/prod/designs/big.py", "more than the 262144 allowed"),
    ],
)
def test_s3_sources_outside_the_store_or_over_the_cap_are_invalid_requests(
    make: Callable[..., S3Store], s3_server: Server, uri: str, needle: str
) -> None:
    from common.models.simulation import MAX_CODE_BYTES
    from worker.errors import InvalidRequest
    from worker.job.sources import read_source

    store = make("sim/prod")
    store.put_bytes("designs/big.py", b"#" * (MAX_CODE_BYTES + 1), "text/x-python")
    request = _request(environment=uri.format(bucket=store.bucket), design="file:///dev/null")
    with pytest.raises(InvalidRequest, match=r"^environment\.uri: ") as e:
        read_source(request.environment, "environment", store)
    assert needle in e.value.message
    s3_server.sync_log()
    big = f"/{store.bucket}/sim/prod/designs/big.py"
    assert f"GET {big}" not in s3_server.requests()  # refused from its size, never downloaded


def test_s3_source_with_an_unreachable_store_is_a_retryable_infrastructure_error() -> None:
    from worker.errors import InfrastructureError, InvalidRequest
    from worker.job.sources import read_source

    store = S3Store("b", endpoint_url="http://127.0.0.1:9", max_attempts=1, **CREDS)
    with pytest.raises(InfrastructureError) as e:
        read_source(_request(design="s3://b/d.py").design, "design", store)
    assert not isinstance(e.value, InvalidRequest)
    assert "unreachable" in e.value.message


def test_s3_design_runs_end_to_end(make: Callable[..., S3Store], tmp_path: Path) -> None:
    """A whole job whose design comes from the store and whose artifacts go to it."""
    from common.models.simulation import SimulationRequest
    from worker.pipeline import run_request

    store = make("sim")
    code = b"from build123d import Box, Pos\ndef build():\n    return Pos(0, 0, 50) * Box(9, 9, 9)"
    store.put_bytes("in/design.py", code, "text/x-python")
    request = SimulationRequest.model_validate(
        {
            "request_id": f"s3e2e-{uuid.uuid4().hex[:6]}",
            "design": {"uri": store.s3_uri("in/design.py")},
            "options": {"duration_s": 0.5, "render": False},
        }
    )
    result = run_request(request, Settings(data_dir=tmp_path), store)
    assert result.outcome == "SUCCESS", result.reason
    assert result.artifact_urls["report"].startswith(store.endpoint)

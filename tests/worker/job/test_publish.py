"""What a job leaves: each file from the jail under its own cap, both reports, the URLs; in
the store, read back: keys per execution, result.json last and listed, and `stored_result` for
a retried attempt."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

from common.models.simulation import FailureKind, SimulationResult
from worker.errors import Failure
from worker.job.publish import (
    ARTIFACT_NAMES,
    MAX_IMAGE_BYTES,
    artifact_prefix,
    collect,
    publish,
    stored_result,
)
from worker.storage import LocalStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>\n'


def test_an_image_over_its_cap_is_left_out_and_the_others_kept(tmp_path: Path) -> None:
    src, dest = tmp_path / "out", tmp_path / "collected"
    src.mkdir()
    dest.mkdir()
    (src / "poster.png").write_bytes(PNG)
    with open(src / "contact.png", "wb") as f:  # sparse: over the cap without writing 16 MiB
        f.truncate(MAX_IMAGE_BYTES + 1)
    (src / "plots.svg").write_bytes(SVG)
    got = collect(
        src,
        dest,
        {"poster": "poster.png", "contact_sheet": "contact.png", "plots": "plots.svg"},
        max_bytes=512 * 1024 * 1024,  # the video's cap: not the images'
    )
    assert got == {"poster": "poster.png", "plots": "plots.svg"}
    assert sorted(p.name for p in dest.iterdir()) == ["plots.svg", "poster.png"]


def test_publish_writes_both_reports_and_points_at_every_artifact(tmp_path: Path) -> None:
    files_dir = tmp_path / "collected"
    files_dir.mkdir()
    (files_dir / "poster.png").write_bytes(PNG)
    (files_dir / "plots.svg").write_bytes(SVG)
    store = LocalStore(tmp_path / "store")
    result = publish(
        request_id="req-1",
        prefix="req-1",
        store=store,
        files_dir=files_dir,
        failure=None,
        reason="The simulation ran 1.00 s and stayed stable.",
        metrics={"sim_time_s": 1.0, "steps": 500},
        files={"poster": "poster.png", "plots": "plots.svg"},
        phases={"build": 0.1},
        started=time.monotonic(),
    )
    urls = result.artifact_urls
    assert set(urls) == {"poster", "plots", "report", "report_html", "result"}
    for key in urls:
        assert Path(urlparse(urls[key]).path).is_file(), key
    assert Path(urlparse(urls["poster"]).path).name == ARTIFACT_NAMES["poster"]
    page = Path(urlparse(urls["report_html"]).path).read_text()
    assert page.count('src="data:image/png;base64,') == 1
    assert page.count('src="data:image/svg+xml;base64,') == 1
    assert "The simulation ran 1.00 s and stayed stable." in page
    assert "SUCCESS" in Path(urlparse(urls["report"]).path).read_text()


def publish_one(store: LocalStore, prefix: str, tmp_path: Path) -> SimulationResult:
    return publish(
        request_id="req",
        prefix=prefix,
        store=store,
        files_dir=tmp_path,
        failure=Failure(FailureKind.NO_GEOMETRY, "No solid."),
        reason="",
        metrics={},
        files={},
        phases={},
        started=time.monotonic(),
        logs="log line\n",
    )


def test_prefixes() -> None:
    assert artifact_prefix("req") == "req"
    assert artifact_prefix("req", "01a2-run") == "req/01a2-run"


def test_every_artifact_is_listed_with_a_lasting_uri(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    result = publish_one(store, "req/run-1", tmp_path)
    root = tmp_path / "store" / "req" / "run-1"
    assert result.artifact_urls == {
        "logs": (root / "logs.txt").as_uri(),
        "report": (root / "report.md").as_uri(),
        "report_html": (root / "report.html").as_uri(),
        "result": (root / "result.json").as_uri(),
    }
    assert result.artifact_uris == result.artifact_urls
    assert SimulationResult.model_validate_json((root / "result.json").read_text()) == result


def test_stored_result_returns_what_the_execution_stored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert stored_result(store, "req/run-1") is None
    result = publish_one(store, "req/run-1", tmp_path)
    assert stored_result(store, "req/run-1") == result
    assert stored_result(store, "req/run-2") is None  # another execution's are its own


def test_a_stored_result_that_does_not_validate_counts_as_none(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("req/run-1/result.json", b'{"outcome": "MAYBE"}', "application/json")
    assert stored_result(store, "req/run-1") is None

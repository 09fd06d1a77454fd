"""report.html in a real browser (Debian's chromium, headless): it loads without a console error,
every image and the video load, and a design's hostile text stays text.

The screenshot of the real report is kept next to it (`report-screenshot.png` in the test's
temporary directory) for a person to look at."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from build123d import Box, Pos

from common.models.simulation import Objectives, SimOptions
from worker.simulation.report import CSP, Media, report_html
from worker.storage.local import LocalStore
from worker.utils.simulation import simulate_local

IMAGES = """Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))"""
VIDEO = """new Promise(done => {
    const v = document.querySelector('video');
    if (!v) return done(null);
    const report = () => done({ready: v.readyState, duration: v.duration,
                               width: v.videoWidth, error: v.error && v.error.code});
    if (v.readyState >= 1) return report();
    v.addEventListener('loadedmetadata', report);
    v.addEventListener('error', report);
    setTimeout(report, 20000);
})"""


def _hostile() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(
        "report_cases", Path(__file__).with_name("test_report.py")
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r: dict[str, Any] = mod.hostile_result()
    return r


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A rendered run: a block falls into a forbid zone (FAIL at ~0.17 s)."""
    block = Pos(-40, 0, 200) * Box(60, 40, 40)
    block.label = "block"
    objectives = Objectives.model_validate(
        {"zones": [{"name": "pit", "kind": "forbid", "min": [-150, -80, 0], "max": [60, 80, 4]}]}
    )
    root = tmp_path_factory.mktemp("report")
    result = simulate_local(
        block,
        SimOptions(duration_s=2.0, width=480, height=360),
        objectives,
        store=LocalStore(root),
        request_id="browser-report",
    )
    assert result.failure is not None and result.failure.value == "FORBID_ZONE_HIT"
    page = Path(urlparse(result.artifact_urls["report_html"]).path)
    return page, result.model_dump(mode="json")


@pytest.mark.slow
def test_the_real_report_loads_with_every_image_and_the_video(
    browser: Any, real_report: tuple[Path, dict[str, Any]]
) -> None:
    path, result = real_report
    page = browser.open(path.as_uri())
    images = page.evaluate(IMAGES)
    assert [i["alt"].split(":")[0] for i in images] == [
        "The decisive moment",
        "Plots over simulated time",
        "The decisive moment from four sides",
    ]
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in images), images
    video = page.evaluate(VIDEO)
    frames = result["metrics"]["frames"]
    assert video is not None and video["error"] is None and video["ready"] >= 1, video
    assert video["width"] == 480
    assert video["duration"] == pytest.approx(frames / 30, abs=0.05)
    assert page.evaluate("document.querySelector('h1').textContent") == "FAIL — FORBID_ZONE_HIT"
    shot = path.with_name("report-screenshot.png")
    page.screenshot(shot)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
    assert page.errors == []


@pytest.mark.slow
def test_hostile_text_in_a_report_stays_text_in_the_browser(
    browser: Any, real_report: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    real_dir = real_report[0].parent
    media = Media(
        poster=(real_dir / "poster.png").read_bytes(), plots=(real_dir / "plots.svg").read_bytes()
    )
    path = tmp_path / "hostile.html"
    path.write_text(report_html(_hostile(), "hostile", media))
    page = browser.open(path.as_uri())
    assert page.evaluate("document.querySelectorAll('h1, script, iframe').length") == 1
    assert page.evaluate("document.images.length") == 2  # ours; no <img src=x> got in
    assert page.evaluate("typeof window.alert_was_called") == "undefined"
    links = page.evaluate("Array.from(document.links).map(a => a.protocol)")
    assert set(links) <= {"file:"}, links
    text = page.evaluate("document.body.innerText")
    assert "<h1>pwned</h1>" in text and "<img src=x onerror=alert(1)>" in text
    assert page.errors == []


@pytest.mark.slow
def test_the_browser_check_sees_a_broken_image_and_a_blocked_script(
    browser: Any, tmp_path: Path
) -> None:
    """The honest twin of the two above: the same checks do catch a page that is broken."""
    path = tmp_path / "broken.html"
    path.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        f'content="{CSP}"></head><body><img src="data:image/png;base64,AAAA" alt="broken">'
        "<script>window.ran = 1</script></body></html>"
    )
    page = browser.open(path.as_uri())
    (image,) = page.evaluate(IMAGES)
    assert image["width"] == 0
    assert page.evaluate("typeof window.ran") == "undefined"  # the CSP blocked it ...
    assert any("Content Security Policy" in e for e in page.errors), page.errors  # ... loudly

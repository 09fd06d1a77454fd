"""Text a design controls, aimed at the reports: an exception message or a part label carrying
HTML, a script and a `javascript:` link must reach report.md and report.html as text only. Each
exploit runs through the real pipeline and jails, its reports are rendered by a real CommonMark
renderer and loaded in a real browser; next to it, its honest twin."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from markdown_it import MarkdownIt

from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]
LABEL = "<img src=x onerror=alert(1)>"
PAYLOAD = "<h1>pwned</h1><img src=x onerror=alert(1)>[click](javascript:alert(2))<script>x</script>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(html)
    return p.tags


def reports(result: SimulationResult) -> tuple[str, str]:
    md = Path(urlparse(result.artifact_urls["report"]).path).read_text()
    html = Path(urlparse(result.artifact_urls["report_html"]).path)
    return md, html.as_uri()


def check_inert(result: SimulationResult, new_browser: Callable[[], Any], visible: str) -> None:
    """Both reports show `visible` as text, and nothing a design wrote became an element."""
    md, page_url = reports(result)
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert {t for t, _ in tags(rendered)} <= {"h1", "h2", "p", "strong", "a", "table", "thead",
                                              "tbody", "tr", "th", "td"}  # fmt: skip
    assert all(not (a.get("href") or "").startswith("javascript") for _, a in tags(rendered))
    page = new_browser().open(page_url)  # started after the job: not one of its processes
    assert page.evaluate("document.querySelectorAll('h1').length") == 1
    assert page.evaluate("document.querySelectorAll('script, iframe, img').length") == 0
    assert visible in page.evaluate("document.querySelector('header').innerText")
    assert page.errors == []


def test_html_in_an_exception_message_stays_text_in_both_reports(
    run_design: RunDesign, new_browser: Callable[[], Any]
) -> None:
    r = run_design(f"def build():\n    raise ValueError({PAYLOAD!r})\n")
    assert r.failure == FailureKind.USER_CODE_ERROR
    # The reason keeps the words, quoted as the design's own ...
    assert r.reason.startswith(f"The design's build failed: «ValueError: {PAYLOAD}")
    check_inert(r, new_browser, PAYLOAD)  # ... and the reports show them, as words


def test_honest_exception_message_shows_in_both_reports(
    run_design: RunDesign, new_browser: Callable[[], Any]
) -> None:
    r = run_design("def build():\n    raise ValueError('the bracket is 2 mm too short')\n")
    assert r.failure == FailureKind.USER_CODE_ERROR
    check_inert(r, new_browser, "ValueError: the bracket is 2 mm too short")


def test_html_in_a_part_label_is_refused_before_it_reaches_a_report(
    run_design: RunDesign, new_browser: Callable[[], Any]
) -> None:
    """Labels are names ([A-Za-z0-9_.:-]): the label never gets as far as the reports."""
    r = run_design(
        f"""
        from build123d import Box, Pos

        def build():
            b = Pos(0, 0, 20) * Box(10, 10, 10)
            b.label = {LABEL!r}
            return b
        """
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The design's build failed: «PARTS metadata is invalid at label: String should match "
        "pattern '^[A-Za-z0-9_.:-]+$'»"
    )
    md, page_url = reports(r)
    assert "onerror" not in md and "onerror" not in Path(urlparse(page_url).path).read_text()
    check_inert(r, new_browser, "PARTS metadata is invalid at label")

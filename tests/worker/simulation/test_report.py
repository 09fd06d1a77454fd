"""The reports: report.md and report.html say the verdict, the parts, the rules that fired and the
timings, and text a design controls can never become markup in either."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from typing import Any

from worker.simulation.report import (
    CSP,
    VIDEO_EMBED_MAX_BYTES,
    Media,
    md,
    report_html,
    report_markdown,
    safe_url,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'
MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16

HOSTILE = (
    "<h1>pwned</h1> <img src=x onerror=alert(1)> [click](javascript:alert(1)) "
    '<a href="javascript:alert(2)">x</a> **bold** `code` | pipe &amp; <script>alert(3)</script>'
)


def result(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "outcome": "FAIL",
        "failure": "OUT_OF_BOUNDS",
        "reason": "Part 'box' left the bounds at t=0.50 s.",
        "video_url": "file:///x/video.mp4",
        "artifact_urls": {"video": "file:///x/video.mp4", "report": "file:///x/report.md"},
        "metrics": {
            "sim_time_s": 0.5,
            "steps": 250,
            "wall_time_s": 1.25,
            "real_time_factor": 2.0,
            "phases_s": {"build": 1.0, "simulate": 0.2},
            "parts": {
                "box": {
                    "mass_kg": 1.0,
                    "initial_position_mm": [0, 0, 100],
                    "final_position_mm": [0, 0, -50],
                    "max_speed_mm_s": 1200.0,
                }
            },
            "goal": None,
            "runs": [
                {
                    "run": 0,
                    "outcome": "FAIL",
                    "failure": "OUT_OF_BOUNDS",
                    "reason": "Part 'box' left the bounds at t=0.50 s.",
                    "decided_at_s": 0.5,
                    "culprits": ["box"],
                    "events": [
                        {
                            "t_s": 0.5,
                            "rule": "OUT_OF_BOUNDS",
                            "parts": ["box"],
                            "reason": "Part 'box' left the bounds at t=0.50 s.",
                            "decisive": True,
                        }
                    ],
                }
            ],
        },
        "versions": {"mujoco": "4.0.1"},
        "policy_digest": "sha256:abc",
    }
    base.update(over)
    return base


def hostile_result() -> dict[str, Any]:
    r = result(reason=HOSTILE)
    r["metrics"]["parts"] = {HOSTILE: r["metrics"]["parts"]["box"]}
    run = r["metrics"]["runs"][0]
    run["reason"], run["culprits"] = HOSTILE, [HOSTILE]
    run["events"][0]["reason"], run["events"][0]["parts"] = HOSTILE, [HOSTILE]
    r["artifact_urls"]["evil"] = "javascript:alert(4)"
    return r


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(page)
    return p.tags


# --- report.md -------------------------------------------------------------------------------


def test_markdown_names_verdict_parts_rules_and_timings() -> None:
    text = report_markdown(result(), "req-1")
    assert "**FAIL — OUT\\_OF\\_BOUNDS**: Part 'box' left the bounds at t=0.50 s." in text
    assert "Decided at t = 0.500 s (part: box)." in text
    assert "| box | 1 | 0.0, 0.0, 100.0 | 0.0, 0.0, -50.0 | 1200 |" in text
    assert "| 0 | 0.500 | OUT\\_OF\\_BOUNDS | box | decision |" in text
    assert "| build | 1.000 s |" in text


def test_markdown_escapes_every_character_that_could_be_markup() -> None:
    text = report_markdown(hostile_result(), "req-1")
    # No raw tag, link, emphasis or table pipe survives: each is backslash-escaped. (The
    # ](javascript: in the text shows escaped as \](javascript:.)
    assert re.search(r"(?<!\\)[<>\[\]`*|]", md(HOSTILE)) is None
    assert md(HOSTILE) in text
    ours, rest = [], []
    for ln in text.splitlines():  # the artifact links are ours: [name](<url>)
        (ours if ln.startswith("Artifacts ") else rest).append(ln)
    body = "\n".join(rest)
    assert re.search(r"(?<!\\)[<>]", body) is None  # no raw HTML can open
    assert re.search(r"(?<!\\)\]\(", body) is None  # no link can close
    assert ours == ["Artifacts (next to this file): [video](video.mp4)"]  # javascript: dropped
    # Each table row of the parts keeps its five cells (the pipes in the label are escaped).
    row = next(ln for ln in text.splitlines() if ln.startswith("| \\<h1\\>"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 6


def test_markdown_renders_hostile_text_as_text_in_a_real_commonmark_renderer() -> None:
    from markdown_it import MarkdownIt

    page = MarkdownIt("commonmark").enable("table").render(report_markdown(hostile_result(), "r"))
    tags = tags_of(page)
    assert {t for t, _ in tags} <= {"h1", "h2", "p", "strong", "a", "table", "thead", "tbody",
                                    "tr", "th", "td"}  # fmt: skip
    assert [a["href"] for t, a in tags if t == "a"] == ["video.mp4"]
    assert "&lt;h1&gt;pwned&lt;/h1&gt;" in page and "&lt;script&gt;" in page
    # The label with its pipes stays one cell: the parts table has 5 columns in every row.
    parts = page.split("<h2>Parts</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", parts, re.DOTALL)
    assert [len(re.findall(r"<t[hd][ >]", r)) for r in rows] == [5, 5]


def test_markdown_escape_keeps_a_sentence_readable() -> None:
    assert md("Part 'ball' reached the goal and stayed 1 s (t=1.73 s).") == (
        "Part 'ball' reached the goal and stayed 1 s (t=1.73 s)."
    )
    assert md("a\nb\tc") == "a b c"


# --- report.html -----------------------------------------------------------------------------


def test_html_has_the_verdict_rules_parts_and_embeds_every_image() -> None:
    page = report_html(
        result(), "req-1", Media(poster=PNG, contact_sheet=PNG, plots=SVG, video=MP4)
    )
    assert page.startswith("<!DOCTYPE html>")
    assert f'content="{CSP}"' in page
    assert "<h1>FAIL — OUT_OF_BOUNDS</h1><p>Part &#x27;box&#x27; left the bounds" in page
    assert 'class="decisive"' in page and "<code>OUT_OF_BOUNDS</code>" in page
    imgs = [a["src"] for t, a in tags_of(page) if t == "img"]
    assert [s[:22] for s in imgs if s] == [
        "data:image/png;base64,",
        "data:image/svg+xml;bas",
        "data:image/png;base64,",
    ]
    assert base64.b64encode(SVG).decode() in page
    (video,) = [a for t, a in tags_of(page) if t == "video"]
    assert (video["src"] or "").startswith("data:video/mp4;base64,")


def test_html_refuses_bytes_that_are_not_what_they_claim() -> None:
    bogus = b"<script>alert(1)</script>"
    page = report_html(result(), "r", Media(poster=bogus, contact_sheet=SVG, plots=PNG))
    assert not [t for t, _ in tags_of(page) if t in ("img", "script")]


def test_html_links_a_video_above_the_embedding_cap() -> None:
    big = MP4 + b"\x00" * VIDEO_EMBED_MAX_BYTES
    page = report_html(result(), "r", Media(video=big))
    assert not [t for t, _ in tags_of(page) if t == "video"]
    assert '<a href="file:///x/video.mp4">' in page


def test_html_escapes_everything_a_design_controls() -> None:
    page = report_html(hostile_result(), "req-1", Media(poster=PNG))
    tags = tags_of(page)
    allowed = {
        "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "p", "code",
        "section", "h2", "div", "figure", "img", "figcaption", "table", "thead", "tbody", "tr",
        "th", "td", "span", "ul", "li", "a", "small", "footer", "br",
    }  # fmt: skip
    assert {t for t, _ in tags} <= allowed
    assert [t for t, _ in tags].count("h1") == 1 and [t for t, _ in tags].count("img") == 1
    for _, attrs in tags:
        assert not any(k.startswith("on") for k in attrs)
        assert not any((v or "").lower().startswith("javascript:") for v in attrs.values())
    assert "&lt;h1&gt;pwned&lt;/h1&gt;" in page and "&lt;script&gt;" in page


def test_only_file_and_http_links_are_kept() -> None:
    assert safe_url("file:///tmp/a b/video.mp4") == "file:///tmp/a b/video.mp4"
    assert safe_url("https://s3.example/x?X-Amz-Signature=1&b=2") is not None
    for bad in ("javascript:alert(1)", "data:text/html,x", "JAVASCRIPT:x", 'file:///"><x', 3):
        assert safe_url(bad) is None

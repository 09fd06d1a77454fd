"""Making text safe to show: a reason, a log line or a progress phase that a design chose part of
must not be able to repaint a terminal, forge a log section or pass for our own words."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` on one line, with control and format characters (ANSI escapes, carriage returns,
    bidi overrides) written as visible escapes. A reason is printed to terminals and logs, and
    the user's code chose part of it (an exception message): it must not be able to repaint a
    FAIL as SUCCESS."""
    return "".join(c if c.isprintable() else " " if c in "\n\t" else ascii(c)[1:-1] for c in text)


def quote_lines(prefix: str, text: str) -> str:
    """Each line of `text` escaped with `printable` and prefixed, one per output line."""
    return "".join(f"{prefix}{printable(line)}\n" for line in text.splitlines())


OPEN, CLOSE = "«", "»"
QUOTED_CHARS = 1800
"""Longest text of a design's own quoted in a reason (the rest is cut, marked with …)."""


def quoted(text: str, limit: int = QUOTED_CHARS) -> str:
    """Text the design controls, as it may appear in one of our sentences: on one line,
    control and format characters escaped (`printable`), capped at `limit` characters, and
    between guillemets that it cannot close itself (any « or » inside become ‹ ›). A reason
    then cannot read as a verdict of ours: «Part 'gem' reached the goal» is visibly the
    design's own words."""
    flat = printable(text).replace(OPEN, "‹").replace(CLOSE, "›")
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f"{OPEN}{flat}{CLOSE}"

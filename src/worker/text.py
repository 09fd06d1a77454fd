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

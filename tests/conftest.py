"""A real browser for the tests that load a page: Debian's chromium, headless, driven over the
DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages separated by NUL on fds 3
and 4), so no websocket library and no network port is needed.

`./dev test` installs chromium (apt-get). Without it the tests that need it fail and say so:
a page that was never loaded in a browser is not a tested page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root; the page is our own file
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
)
TIMEOUT_S = 120.0
"""Generous: a hang, not a speed, is what this bounds."""


class BrowserError(RuntimeError):
    pass


@dataclass
class Page:
    browser: Browser
    session: str
    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions and browser log errors (e.g. CSP violations)."""

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        r = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in r:
            raise BrowserError(f"evaluate failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path, width: int = 1320) -> None:
        """The whole page, `width` CSS pixels wide, as a PNG."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


def _above_9(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Browser:
    def __init__(self, binary: str, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # Above 9, so that moving them onto 3 and 4 below never closes one of them (bash, not
        # dash, takes redirections of fds above 9).
        cmd_r, res_w = (_above_9(fd) for fd in (cmd_r, res_w))
        # The browser reads commands on fd 3 and writes answers on fd 4.
        script = f'exec "$0" "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", script, binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(cmd_r, res_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []
        self.pages: dict[str, Page] = {}

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium did not answer in time")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium closed the pipe (exit {self.proc.poll()})")
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        obj: dict[str, Any] = json.loads(msg)
        return obj

    def _dispatch(self, msg: dict[str, Any]) -> None:
        page = self.pages.get(msg.get("sessionId", ""))
        method, params = msg.get("method", ""), msg.get("params", {})
        if page is None:
            self._events.append(msg)
            return
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            page.errors.append("console: " + json.dumps(params.get("args"))[:500])
        elif method == "Runtime.exceptionThrown":
            page.errors.append("exception: " + json.dumps(params.get("exceptionDetails"))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            page.errors.append(f"log ({e.get('source')}): {e.get('text', '')[:500]}")
        self._events.append(msg)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self._dispatch(answer)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for i, e in enumerate(self._events):
                if e.get("method") == method and e.get("sessionId") == session:
                    del self._events[i]
                    return e
            self._dispatch(self._read(deadline))

    def open(self, url: str) -> Page:
        """A new tab at `url`, loaded (its load event fired), with its errors recorded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        self.pages[session] = page
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        page.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", session)
        return page

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            os.close(self._cmd_w)
            os.close(self._res_r)
        # chromium's own helpers (zygote, gpu, renderers) are in its session: none outlives it.
        deadline = time.monotonic() + 10
        with contextlib.suppress(ProcessLookupError):
            while time.monotonic() < deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                time.sleep(0.05)


def _chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail(
            "chromium is not installed: `./dev test` installs it (apt-get install chromium)"
        )
    return binary


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One browser for the session."""
    b = Browser(_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def new_browser(tmp_path: Path) -> Iterator[Callable[[], Browser]]:
    """`new_browser()` → a browser of this test's own, started when called and gone (with every
    process of it) when the test ends: for tests that check no process outlives a job."""
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser(_chromium(), tmp_path / f"chromium-profile-{len(made)}"))
        return made[-1]

    try:
        yield make
    finally:
        for b in made:
            b.close()

"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol on a pipe: open a page, wait in
real time until a JavaScript condition holds, evaluate, take a screenshot.

Why not ``chromium --headless --screenshot --virtual-time-budget``: virtual time stops while a request is pending,
so a page that keeps one open (the MLflow UI polls its server) never reaches the budget and the command hangs
(seen in CI: killed after 300 s). ``--remote-debugging-pipe`` needs no websocket library: the protocol's JSON
messages go over file descriptors 3 (to the browser) and 4 (from it), each ended by a NUL byte.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["BrowserError", "chromium_executable", "HeadlessChromium", "screenshot", "evaluate_page"]

_DOCUMENT_COMPLETE = "document.readyState === 'complete'"


class BrowserError(RuntimeError):
    """Chromium is missing, exited, or did not answer in time."""


def chromium_executable() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise BrowserError("chromium is not installed (Debian: apt-get install chromium; scripts/install.sh does)")
    return exe


class HeadlessChromium:
    """One headless Chromium process with one page, used as a context manager::

        with HeadlessChromium(size=(1400, 900)) as page:
            page.open(url, ready="document.querySelector('table') !== null", timeout=120)
            page.screenshot("view.png")
    """

    def __init__(self, size: tuple[int, int] = (1400, 900), startup_timeout: float = 120.0):
        self.size = size
        self.startup_timeout = startup_timeout
        self._next_id = 0
        self._buffer = b""
        self._session: str | None = None

    # -- process ---------------------------------------------------------------------------------------------
    def __enter__(self) -> HeadlessChromium:
        self._profile = tempfile.TemporaryDirectory(prefix="avface-chromium-")  # no lock shared with another run
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol's fds 3 (commands in) and 4 (answers out)
            os.dup2(to_browser_r, 100)
            os.dup2(from_browser_w, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)

        # no background networking: a closed network refuses Chromium's own connections, many at a time
        args = [chromium_executable(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", "--no-first-run",
                f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, preexec_fn=wire_pipes, pass_fds=(3, 4),
                                      start_new_session=True)  # its own group: killed whole on exit
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"},
                               timeout=self.startup_timeout)["targetId"]
            self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                             "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc.poll() is None:
                self._session = None
                self._send("Browser.close", {})
                self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, BrowserError):
            pass
        finally:
            if self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            for fd in (self._to_browser, self._from_browser):
                os.close(fd)
            self._profile.cleanup()

    # -- protocol --------------------------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            msg["sessionId"] = self._session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        return self._next_id

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Send one protocol command and wait for its answer (events in between are dropped)."""
        want = self._send(method, params or {})
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                msg = json.loads(raw)
                if msg.get("id") == want:
                    if "error" in msg:
                        raise BrowserError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"chromium did not answer {method} within {timeout:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited (code {self._proc.poll()}) during {method}")
                self._buffer += chunk

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression on the page (JSON-serialisable values)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} raised: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def open(self, url: str, ready: str = _DOCUMENT_COMPLETE, timeout: float = 120.0, settle: float = 0.5) -> bool:
        """Navigate to ``url`` and wait, in real time, until the JS expression ``ready`` is true (then ``settle``
        seconds more, for the last paint); False when ``timeout`` passed first."""
        self.call("Page.navigate", {"url": url}, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate(f"({_DOCUMENT_COMPLETE}) && !!({ready})", timeout=max(deadline - time.monotonic(),
                                                                                       1.0)):
                    time.sleep(settle)
                    return True
            except BrowserError as e:
                if "did not answer" in str(e):
                    return False
            time.sleep(0.25)  # the page's own scripts (an app fetching its data) need the time, not virtual time
        return False

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the page's viewport."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def screenshot(url: str, path: str | Path, size: tuple[int, int] = (1400, 900), ready: str = _DOCUMENT_COMPLETE,
               timeout: float = 180.0, settle: float = 1.0) -> tuple[Path, bool]:
    """A PNG of ``url`` once ``ready`` holds (or at ``timeout``); returns the file and whether ``ready`` held."""
    with HeadlessChromium(size=size) as page:
        held = page.open(url, ready=ready, timeout=timeout, settle=settle)
        return page.screenshot(path), held


def evaluate_page(url: str, expression: str, ready: str = _DOCUMENT_COMPLETE, timeout: float = 120.0) -> Any:
    """The value of ``expression`` on ``url`` once ``ready`` holds; raises :class:`BrowserError` if it never does."""
    with HeadlessChromium() as page:
        if not page.open(url, ready=ready, timeout=timeout, settle=0.0):
            raise BrowserError(f"{url}: {ready!r} did not hold within {timeout:.0f} s")
        return page.evaluate(expression)

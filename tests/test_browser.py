"""Headless Chromium over the DevTools pipe (avface.utils.browser): a page that keeps a request open (the MLflow UI
polls its server; ``--virtual-time-budget`` hangs on such pages) is waited for in real time and captured; image
loading is read from the page; a condition that never holds returns in time."""

from __future__ import annotations

import base64
import http.server
import io
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avface.utils.browser import BrowserError, evaluate_page, screenshot

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium (scripts/install.sh installs it)")

PAGE = b"""<html><body style="background:#fff"><h1 id="x">loading</h1>
<script>fetch('/never');  // a request that stays open, like a UI polling its server
setTimeout(() => { const h = document.getElementById('x'); h.textContent = 'drawn';
  document.body.style.background = '#c03'; }, 700);</script></body></html>"""


@pytest.fixture
def server() -> Iterator[str]:
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/never":
                release.wait(60)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    release.set()
    httpd.shutdown()


def test_screenshot_waits_for_the_condition_despite_an_open_request(server: str, tmp_path: Path):
    start = time.monotonic()
    path, held = screenshot(server, tmp_path / "page.png", size=(320, 200),
                            ready="document.getElementById('x').textContent === 'drawn'", timeout=60, settle=0.3)
    assert held and time.monotonic() - start < 60
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (200, 320, 3)
    # the script's red background was drawn before the capture (white before it ran)
    assert np.abs(pixels[190, 300].astype(int) - [0xCC, 0x00, 0x33]).max() < 8, pixels[190, 300]


def test_a_condition_that_never_holds_returns_at_the_timeout(server: str, tmp_path: Path):
    start = time.monotonic()
    _, held = screenshot(server, tmp_path / "page.png", size=(320, 200), ready="false", timeout=3)
    assert not held and time.monotonic() - start < 40
    with pytest.raises(BrowserError, match="did not hold"):
        evaluate_page(server, "1", ready="false", timeout=2)


def test_image_widths_tell_a_broken_picture(tmp_path: Path):
    png = io.BytesIO()
    Image.new("RGB", (17, 5), (0, 128, 0)).save(png, format="PNG")
    good = base64.b64encode(png.getvalue()).decode()
    page = tmp_path / "page.html"
    page.write_text(f'<html><body><img src="data:image/png;base64,{good}">'
                    f'<img src="data:image/png;base64,{good[:40]}"></body></html>')
    widths = evaluate_page(page.as_uri(), "Array.from(document.images).map(i => i.naturalWidth)")
    assert widths == [17, 0]

"""The MLflow UI on a grid's store: a local server (127.0.0.1), the compare view's address, a headless Chromium
screenshot of it (Debian's ``chromium``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

__all__ = ["free_port", "serve_mlflow", "compare_url", "screenshot", "rest"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_mlflow(tracking_uri: str, port: int | None = None, timeout: float = 300.0,
                 log: Path | None = None) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over ``tracking_uri`` while the block runs; yields its base URL."""
    port = port or free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # closed in the finally block
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server on {base} did not answer /health (exit {proc.poll()})")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()


def rest(base: str, endpoint: str, body: dict | None = None) -> dict:
    """One call of MLflow's REST API (``/api/2.0/mlflow/<endpoint>``): POST ``body`` as JSON, or GET."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The UI's compare view of ``run_ids``."""
    return (f"{base}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
            f"&experiments={quote(json.dumps([experiment_id]))}")


def screenshot(url: str, path: str | Path, size: tuple[int, int] = (1400, 900), budget_ms: int = 15000,
               timeout: float = 300.0) -> Path:
    """A PNG of ``url`` rendered by headless Chromium (the UI is a JS app: ``budget_ms`` of virtual time lets it
    load its data and draw)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium; scripts/install.sh does)")
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={path}", f"--window-size={size[0]},{size[1]}",
                    f"--virtual-time-budget={budget_ms}", url],
                   check=True, timeout=timeout, capture_output=True)
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return path

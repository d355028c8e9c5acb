"""The MLflow UI on a grid's store: a local server (127.0.0.1), the compare view's address, a headless Chromium
screenshot of it (:mod:`avface.utils.browser`)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from avface.utils.browser import screenshot

__all__ = ["free_port", "serve_mlflow", "compare_url", "compare_view", "rest"]


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


def compare_view(base: str, experiment_id: str, runs: dict[str, str], path: str | Path,
                 size: tuple[int, int] = (1400, 900), timeout: float = 180.0) -> tuple[Path, bool]:
    """A headless-Chromium PNG of the compare view of ``runs`` (run id -> run name), taken once the UI (a JS app
    fetching its data) shows every run's name and has drawn its parallel-coordinates chart (plotly), or at
    ``timeout``; returns the file and whether it showed them."""
    names = json.dumps(sorted(runs.values()))
    ready = (f"document.body !== null && document.body.innerText.includes('Comparing') && "
             f"{names}.every(n => document.body.innerText.includes(n)) && "
             f"document.querySelector('.js-plotly-plot') !== null")
    return screenshot(compare_url(base, experiment_id, list(runs)), path, size=size, ready=ready, timeout=timeout)

"""The pipelines run under `ray job submit --working-dir . -- python pipelines/X.py ...` against a running cluster.

A real head node with a dashboard (job server) is started by `ray.cluster_utils.Cluster`; the job is submitted
with the `ray` CLI exactly as a user would, and must finish with its outputs on disk.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job_server():
    from ray.cluster_utils import Cluster

    port = _free_port()
    # The job's `python` is found on the cluster's PATH, as on a user's cluster: this venv's interpreter first.
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old_path}"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": port,
        },
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cluster.shutdown()
        os.environ["PATH"] = old_path


def _submit(address: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--", "python", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_main_job_runs_under_ray_job_submit(job_server, tmp_path: Path):
    out = tmp_path / "demo"
    result = _submit(job_server, "pipelines/main.py", f"out={out}", "turntable.num_frames=4",
                     "turntable.image_size=64")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    assert (out / "turntable.mp4").stat().st_size > 0
    assert (out / "turntable_contact_sheet.png").stat().st_size > 0

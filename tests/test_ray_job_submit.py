"""The pipelines run under `ray job submit --working-dir . -- python pipelines/X.py ...` against a running cluster.

A real head node with a dashboard (job server) is started by `ray.cluster_utils.Cluster`; the job is submitted
with the `ray` CLI exactly as a user would, and must finish with its outputs on disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class JobCluster:
    address: str  # the job server (dashboard)
    temp_dir: Path  # Ray's temporary files: sessions, logs, the jobs' working directories


@contextlib.contextmanager
def ray_job_cluster() -> Iterator[JobCluster]:
    """A head node with a dashboard (job server) of its own: free ports and a private temporary directory, removed
    with the cluster when the block ends (exactly this cluster is stopped)."""
    from ray._private.utils import write_ray_address
    from ray.cluster_utils import Cluster

    port = _free_port()
    # short: Unix socket paths inside it are limited to 107 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="avf-ray-", dir="/tmp"))
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
            # the agent's default port (52365) is taken by any other Ray on this machine: its job server would
            # then answer "No available agent" for ever
            "dashboard_agent_listen_port": _free_port(),
            "temp_dir": str(temp_dir),
        },
    )
    try:
        # The job server tells each job's driver the address it reads from <temp_dir>/ray_current_cluster; without
        # that file the driver joins whichever Ray runs on this machine ("auto"), not necessarily this one.
        write_ray_address(cluster.head_node.gcs_address, str(temp_dir))
        yield JobCluster(f"http://127.0.0.1:{port}", temp_dir)
    finally:
        cluster.shutdown()
        os.environ["PATH"] = old_path
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def job_server():
    with ray_job_cluster() as cluster:
        yield cluster.address


def _submit(address: str, *args: str, timeout: int = 600, tries: int = 6) -> subprocess.CompletedProcess:
    """``ray job submit``; the job server answers "No available agent" until the node's dashboard agent has
    registered (seconds after the head starts, longer on a loaded machine): then the submission is retried, as
    the message asks (the job itself never ran)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    for attempt in range(tries):
        r = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--", "python", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if r.returncode == 0 or "No available agent" not in r.stdout + r.stderr or attempt == tries - 1:
            return r
        time.sleep(10)
    return r


def test_main_job_runs_under_ray_job_submit(job_server, tmp_path: Path):
    """The main job as a Ray job, up to its shards and report (training, evaluation and reconstruction at
    ``size=tiny`` run end to end in tests/test_main_job.py)."""
    import json

    import webdataset as wds

    from avface.data.sample import decode_sample

    out = tmp_path / "demo"
    result = _submit(job_server, "pipelines/main.py", f"out={out}", "size=tiny", "training.enabled=false",
                     "turntable.num_frames=4", "turntable.image_size=64", "corpus.multiface=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    steps = json.loads((out / "outputs.json").read_text())
    assert set(steps) >= {"turntable", "corpus", "shards", "report"} and "training" not in steps
    outputs = {k: Path(v) for step in ("turntable", "corpus", "shards") for k, v in steps[step].items()
               if isinstance(v, str) and v.startswith("/")}
    assert outputs["turntable"].stat().st_size > 0 and outputs["contact_sheet"].stat().st_size > 0
    assert len(list(outputs["voxceleb2"].glob("*/mp4/*/*/*.mp4"))) == 3  # tiny: 2 training + 1 held-out speakers
    summary = json.loads((outputs["shards"] / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["samples"] > 0
    keys = [decode_sample(s)["meta"]["key"]
            for s in wds.WebDataset(sorted(str(p) for p in outputs["shards"].glob("*.tar")), shardshuffle=False)]
    assert len(keys) == summary["samples"] == len(set(keys))
    assert any(k.endswith("_occ") for k in keys)  # synthetic occlusion windows are in the shards
    assert outputs["shards_preview"].stat().st_size > 10_000
    assert Path(steps["report"]["html"]).is_file()

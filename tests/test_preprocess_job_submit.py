"""`ray job submit --working-dir . -- python pipelines/preprocess.py ...` against a running cluster (job server)."""

from __future__ import annotations

import json

import pytest

from avface.data.testing import BAD_CLIPS, make_tiny_voxceleb2
from tests.test_ray_job_submit import _submit, job_server  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_preprocess_under_ray_job_submit(job_server, tmp_path):  # noqa: F811
    root = make_tiny_voxceleb2(tmp_path / "vox", size=64, seconds=1.6, bad=True, n_good=2)
    out = tmp_path / "shards"
    result = _submit(job_server, "pipelines/preprocess.py", f"data.root={root}", f"out={out}",
                     "video.image_size=64", "ray.task_memory_mb=200", "occlusion.windows.train=1", "progress=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 2 * 2 + 1 and summary["shards_failed"] == []
    assert summary["failed_clips"] == len(BAD_CLIPS)
    assert summary["shards"]["train"] and summary["shards"]["train_occ"]

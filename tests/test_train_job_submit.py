"""`ray job submit --working-dir . -- python pipelines/train.py ...` keeps what MLflow records beside its store.

The job runs in Ray's temporary copy of the repository: a registered model or a validation image written to
MLflow's default ``./mlruns`` would land there and disappear with the cluster. After the cluster is stopped and its
temporary directory deleted, a fresh process in another directory loads ``models:/avface/1`` and opens an image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_ray_job_submit import REPO, _submit, ray_job_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# run in a fresh interpreter: the registered model through the inference loader, a validation image of the stage
READ_BACK = """
import json, sys, tempfile
from mlflow.tracking import MlflowClient
from PIL import Image
from avface.inference.checkpoint import load_for_inference

loaded = load_for_inference("models:/avface/1", "cpu")
client = MlflowClient()
run = client.search_runs([client.get_experiment_by_name("avface-train").experiment_id],
                         filter_string="tags.`avface.stage` = 'pretrain'")[0]
with tempfile.TemporaryDirectory() as d:
    png = client.download_artifacts(run.info.run_id, "validation/final.png", d)
    with Image.open(png) as im:
        im.load()
        size = im.size
print(json.dumps({"stage": loaded.meta_summary.get("stage"), "image": size, "artifact_uri": run.info.artifact_uri}))
"""


def test_a_submitted_training_keeps_its_model_and_images_after_the_cluster_is_gone(train_shards, tmp_path):
    out = tmp_path / "run"
    had_mlruns = (REPO / "mlruns").exists()
    with ray_job_cluster() as cluster:
        result = _submit(cluster.address, "pipelines/train.py", f"data.shards={train_shards}", f"out={out}",
                         "stage=pretrain", "stages.pretrain.steps=2", "stages.pretrain.val_every=2",
                         "stages.pretrain.report_every=1", "data.val_windows=8", "data.val_occluded_windows=0",
                         "progress=false")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        job_dirs = [d for d in cluster.temp_dir.glob("session_*/runtime_resources/working_dir_files/*") if d.is_dir()]
        assert job_dirs, "the job's working directory is not where this test looks for it"
        assert not [d for d in job_dirs if (d / "mlruns").exists()]
    assert not cluster.temp_dir.exists()  # Ray's temporary files are gone, the job's working directory with them

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{out / 'mlflow.db'}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", READ_BACK], cwd=elsewhere, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["stage"] == "pretrain" and min(got["image"]) > 0
    assert got["artifact_uri"].startswith((out / "mlartifacts").as_uri())
    assert not (elsewhere / "mlruns").exists()
    assert had_mlruns or not (REPO / "mlruns").exists()

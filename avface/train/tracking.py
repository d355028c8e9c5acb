"""MLflow tracking of training: one parent run per ``train`` invocation (run name), one child run per stage.

The driver creates (or upgrades) the store and the runs before any worker starts (MLflow 3.17 races when several
processes create a fresh sqlite store at once); rank 0 of each stage logs through
:class:`StageTracker` with the child run's id. Re-running the same run name finds the runs by their tags and
continues them (one run per stage, however often it is resumed).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["default_tracking_uri", "setup_tracking", "find_or_create_run", "StageTracker", "register_final_model",
           "flatten_params", "log_params"]

RUN_KEY_TAG = "avface.run_key"
STAGE_TAG = "avface.stage"


def default_tracking_uri(out: str | os.PathLike) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def setup_tracking(tracking_uri: str, experiment: str) -> str:
    """Create the store (schema migration happens here, once) and the experiment; returns the experiment id."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return exp.experiment_id if exp is not None else client.create_experiment(experiment)


def find_or_create_run(tracking_uri: str, experiment_id: str, run_key: str, run_name: str,
                       parent_run_id: str | None = None, stage: str | None = None) -> tuple[str, bool]:
    """The run tagged ``run_key`` (and ``stage``), or a new one; returns (run_id, resumed)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    flt = f"tags.`{RUN_KEY_TAG}` = '{run_key}'"
    flt += f" and tags.`{STAGE_TAG}` = '{stage}'" if stage else f" and tags.`{STAGE_TAG}` = 'parent'"
    found = client.search_runs([experiment_id], filter_string=flt, max_results=1)
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id, True
    tags = {RUN_KEY_TAG: run_key, STAGE_TAG: stage or "parent", "mlflow.runName": run_name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id, False


def flatten_params(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params (dotted keys, values as strings of at most 6000 characters)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
        else:
            out[key] = json.dumps(v)[:6000] if not isinstance(v, str) else v[:6000]
    return out


def log_params(tracking_uri: str, run_id: str, params: dict[str, str]) -> None:
    """Log params once (a resumed run already has them: MLflow refuses to change a param's value)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    have = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])


class StageTracker:
    """Rank 0's handle on its stage's child run: metrics, tags, images, artifacts."""

    def __init__(self, tracking: dict[str, str]):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking["uri"])
        self.run_id = tracking["run_id"]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k.replace("@", "_"), float(v), ts, int(step)) for k, v in metrics.items()
              if isinstance(v, int | float) and np.isfinite(v)]
        for i in range(0, len(ms), 500):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 500])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value[:5000])

    def log_image(self, image: np.ndarray | None, artifact_file: str) -> None:
        if image is not None:
            self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def register_final_model(tracking_uri: str, run_id: str, final: str | os.PathLike, name: str) -> str | None:
    """Log ``final`` under the parent run's ``model/`` and register it as a new version of ``name``; returns the
    version (``models:/<name>/<version>``) or None when ``name`` is empty."""
    if not name:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / "model"
        local.mkdir()
        (local / Path(final).name).write_bytes(Path(final).read_bytes())
        client.log_artifacts(run_id, str(local), "model")
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - "does not exist" is an MlflowException of the store
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    mv = client.create_model_version(name, source, run_id=run_id)
    return str(mv.version)

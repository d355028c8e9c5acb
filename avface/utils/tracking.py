"""MLflow tracking, shared by training and evaluation: one parent run per ``train`` invocation (run name), one
child run per stage.

The driver creates (or upgrades) the store and the runs before any worker starts (MLflow 3.17 races when several
processes create a fresh sqlite store at once); rank 0 of each stage logs through
:class:`StageTracker` with the child run's id. Re-running the same run name finds the runs by their tags and
continues them (one run per stage, however often it is resumed).

Artifacts (validation images, ``final.pt``, the registered model's files) live beside the store: a sqlite store
``<dir>/mlflow.db`` gets ``<dir>/mlartifacts/<experiment>``, a tracking server keeps them in its own artifact
store. MLflow's own default, ``./mlruns`` of the process's current directory, would put them in Ray's temporary
copy of the repository under ``ray job submit --working-dir .`` (deleted with the job's cluster).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["default_tracking_uri", "artifact_root", "experiment_artifact_location", "setup_tracking",
           "find_or_create_run", "StageTracker", "register_final_model", "flatten_params", "log_params"]

RUN_KEY_TAG = "avface.run_key"
STAGE_TAG = "avface.stage"
#: every experiment of the project: MLflow 3.17's UI opens an experiment tagged "custom_model_development" on its
#: runs ("Model training"), not on the GenAI overview of traces (its JS reads the tag ``mlflow.experimentKind``)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def default_tracking_uri(out: str | os.PathLike) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths as sqlite reads them: from the current
    directory), absolute; None for any other URI and for an in-memory database."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def artifact_root(tracking_uri: str) -> str | None:
    """Where the experiments of ``tracking_uri`` keep their artifacts, as an absolute ``file://`` URI: beside a
    sqlite store (``<dir>/mlartifacts``). None where MLflow already chooses a place that is not the current
    directory: a tracking server (its artifact store, proxied or not) and a file store (its own directory)."""
    db = _sqlite_path(tracking_uri)
    if db is not None:
        return (db.parent / "mlartifacts").as_uri()
    if urlparse(tracking_uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        # a database without a server: MLflow would use ./mlruns of the current directory, and there is no
        # directory beside such a store to choose instead
        log.warning("tracking store %s: artifacts go to MLflow's default ./mlruns of the current directory; run "
                    "an MLflow server with an artifact store to keep them in one place", tracking_uri)
    return None


def experiment_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """The artifact location a new experiment ``experiment`` of ``tracking_uri`` gets (one folder per
    experiment, as ``mlflow server`` lays them out); None: the store's default (see :func:`artifact_root`)."""
    root = artifact_root(tracking_uri)
    return f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment)}" if root is not None else None


def setup_tracking(tracking_uri: str, experiment: str) -> str:
    """Create the store (schema migration happens here, once) and the experiment, with its artifacts beside the
    store (:func:`experiment_artifact_location`); returns the experiment id. An experiment that already exists
    keeps its artifact location (a log line says where it is when that is not beside the store)."""
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri)
    location = experiment_artifact_location(tracking_uri, experiment)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
    if location is not None and exp.artifact_location != location:
        # made by an earlier version (MLflow's default: ./mlruns of the directory that process ran in)
        log.info("MLflow experiment %r keeps its artifacts at %s (not beside the store at %s)", experiment,
                 exp.artifact_location, location)
    for key, value in EXPERIMENT_TAGS.items():
        if key not in exp.tags:  # an experiment made before the tag existed (a user's own choice is kept)
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


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

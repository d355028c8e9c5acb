"""MLflow artifacts live beside the tracking store, not in the current directory of the process that logs them."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from avface.utils.tracking import (
    StageTracker,
    artifact_root,
    default_tracking_uri,
    experiment_artifact_location,
    register_final_model,
    setup_tracking,
)


def test_artifact_root_is_beside_a_sqlite_store_and_the_servers_own_elsewhere(tmp_path, monkeypatch):
    assert artifact_root(default_tracking_uri(tmp_path / "out")) == (tmp_path / "out" / "mlartifacts").as_uri()
    monkeypatch.chdir(tmp_path)  # a relative sqlite path is read from the current directory, made absolute
    assert artifact_root("sqlite:///rel/mlflow.db?timeout=30") == (tmp_path / "rel" / "mlartifacts").as_uri()
    assert experiment_artifact_location("sqlite:///rel/mlflow.db", "my exp") == \
        (tmp_path / "rel" / "mlartifacts" / "my_exp").as_uri()
    for uri in ("http://mlflow:5000", "https://mlflow.example.org", str(tmp_path / "filestore"),
                (tmp_path / "filestore").as_uri()):
        assert artifact_root(uri) is None, uri  # the server's artifact store; a file store keeps its own


def test_a_new_experiment_logs_its_artifacts_beside_the_store_from_any_directory(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store, elsewhere = tmp_path / "out", tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = default_tracking_uri(store)
    exp = setup_tracking(uri, "avface-train")
    client = MlflowClient(uri)
    location = store / "mlartifacts" / "avface-train"
    assert client.get_experiment(exp).artifact_location == location.as_uri()
    assert setup_tracking(uri, "avface-train") == exp  # found again, not created twice
    run = client.create_run(exp).info.run_id
    tracker = StageTracker({"uri": uri, "run_id": run})
    tracker.log_image(np.zeros((8, 8, 3), np.uint8), "validation/step_1.png")
    final = tmp_path / "final.pt"
    final.write_bytes(b"weights")
    version = register_final_model(uri, run, final, "avface")
    arts = location / run / "artifacts"
    assert (arts / "validation" / "step_1.png").is_file() and (arts / "model" / "final.pt").is_file()
    # the registered version points at the run's files there (MLflow's registry does not copy them)
    assert client.get_model_version("avface", version).source == f"{location.as_uri()}/{run}/artifacts/model"
    assert not (elsewhere / "mlruns").exists() and not list(elsewhere.iterdir())


def test_an_experiment_made_before_keeps_its_artifact_location(tmp_path, caplog):
    """An older store's experiment keeps its ``./mlruns`` location (logged); a model registered there whose folder
    was deleted since (Ray's temporary copy of the repository) says so instead of "not found in the registry"."""
    import shutil

    from mlflow.tracking import MlflowClient

    from avface.inference.checkpoint import CheckpointNotFoundError, resolve_registered

    uri = default_tracking_uri(tmp_path / "out")
    setup_tracking(uri, "other")  # creates the store
    old = tmp_path / "old" / "mlruns" / "1"
    exp = MlflowClient(uri).create_experiment("avface-train", artifact_location=old.as_uri())
    with caplog.at_level(logging.INFO, logger="avface.utils.tracking"):
        assert setup_tracking(uri, "avface-train") == exp
    assert MlflowClient(uri).get_experiment(exp).artifact_location == old.as_uri()
    assert old.as_uri() in caplog.text
    final = tmp_path / "final.pt"
    final.write_bytes(b"weights")
    version = register_final_model(uri, MlflowClient(uri).create_run(exp).info.run_id, final, "avface")
    shutil.rmtree(old)
    with pytest.raises(CheckpointNotFoundError, match=f"version {version} is registered but its files at"):
        resolve_registered(f"models:/avface/{version}", tmp_path / "dst", uri)

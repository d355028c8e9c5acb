"""Which trained model to reconstruct with.

``checkpoint`` may be:

* a path: a stage's ``final.pt``, a ``checkpoint.pt`` or a Ray checkpoint directory (:func:`load_trained`);
* ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: a model version in the MLflow registry the training
  registered it in (``$MLFLOW_TRACKING_URI``, else the default training store ``<out>/mlflow.db``); its ``model/``
  artifact folder is downloaded to a temporary folder and its checkpoint loaded;
* None: the newest checkpoint under the default training output (``TrainConfig.out``, ``runs/train``:
  :func:`find_latest_checkpoint`), else the newest version of the registered model in the default store, else
  the project's shipped default model (:func:`~avface.trained.checkpoints.shipped_model`: trained on synthetic
  faces only; ``LoadedModel.shipped`` says so); with none of them, :class:`CheckpointNotFoundError` saying how to
  train one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avface.audio.config import AudioConfig
from avface.trained.checkpoints import (
    CHECKPOINT_FILE,
    DEFAULT_REGISTERED_MODEL,
    DEFAULT_TRAINING_OUT,
    FINAL_FILE,
    find_latest_checkpoint,
    load_trained,
    shipped_model,
)
from avface.trained.contract import InputContract
from avface.utils.tracking import default_tracking_uri

NO_CHECKPOINT_HINT = ("train one with `python pipelines/train.py data.shards=DIR` (see README: it writes "
                      "runs/train/<name>/<stage>/final.pt and registers the model in runs/train/mlflow.db), or pass "
                      "--checkpoint PATH or --checkpoint models:/NAME@ALIAS")


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint to reconstruct with; the message says how to get one."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    face_model: torch.nn.Module
    audio: AudioConfig  # the features the model was trained on
    contract: InputContract  # how its inputs were made: frame rate, crop, ...
    source: str
    meta_summary: dict[str, Any] = field(default_factory=dict)
    shipped: bool = False  # the project's default model (no trained or registered model was found)


def default_training_out() -> Path:
    return Path(DEFAULT_TRAINING_OUT)


def _tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(default_training_out())


def _store_exists(uri: str) -> bool:
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def resolve_registered(spec: str, dst: str | os.PathLike, tracking_uri: str | None = None) -> Path:
    """Download the checkpoint of ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` / ``models:/NAME`` (newest
    version) into ``dst``; returns the checkpoint file."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or _tracking_uri()
    if not _store_exists(uri):
        raise CheckpointNotFoundError(f"{spec}: no MLflow store at {uri}; {NO_CHECKPOINT_HINT}")
    body = spec.removeprefix("models:/")
    client = MlflowClient(uri)
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in body:
            name, version = body.split("/", 1)
            mv = client.get_model_version(name, version)
        else:
            versions = client.search_model_versions(f"name = '{body}'")
            if not versions:
                raise CheckpointNotFoundError(f"{spec}: no version of registered model {body!r} in {uri}; "
                                              f"{NO_CHECKPOINT_HINT}")
            mv = max(versions, key=lambda v: int(v.version))
    except MlflowException as e:
        raise CheckpointNotFoundError(f"{spec}: not found in the MLflow registry {uri} ({e}); "
                                      f"{NO_CHECKPOINT_HINT}") from e
    try:
        local = Path(client.download_artifacts(mv.run_id, "model", str(dst))) if mv.run_id else None
    except MlflowException as e:  # e.g. a store whose artifacts were written to a directory deleted since
        raise CheckpointNotFoundError(f"{spec}: model version {mv.version} is registered but its files at "
                                      f"{mv.source} cannot be read ({e}); {NO_CHECKPOINT_HINT}") from e
    found = None
    if local is not None:
        for name in (FINAL_FILE, CHECKPOINT_FILE):
            hits = sorted(local.rglob(name))
            if hits:
                found = hits[-1]
                break
        if found is None:
            hits = sorted(local.rglob("*.pt"))
            found = hits[-1] if hits else None
    if found is None:
        raise CheckpointNotFoundError(f"{spec}: model version {mv.version} has no checkpoint file in its artifacts")
    return found


def load_for_inference(checkpoint: str | os.PathLike | None, device: str) -> LoadedModel:
    """Load the model ``checkpoint`` names (see the module docstring) onto ``device`` in eval mode."""
    shipped = False
    with tempfile.TemporaryDirectory(prefix="avface-ckpt-") as tmp:
        if checkpoint is None:
            root = default_training_out()
            found = find_latest_checkpoint(root)
            if found is None:
                uri = _tracking_uri()
                try:
                    if not _store_exists(uri):
                        raise CheckpointNotFoundError(
                            f"no --checkpoint given, no checkpoint under {root}/ and no MLflow store at {uri}; "
                            f"{NO_CHECKPOINT_HINT}")
                    found = resolve_registered(f"models:/{DEFAULT_REGISTERED_MODEL}", tmp, uri)
                except CheckpointNotFoundError:
                    found = shipped_model()
                    if found is None:
                        raise
                    shipped = True
            source = str(found)
        elif str(checkpoint).startswith("models:/"):
            source = str(checkpoint)
            found = resolve_registered(source, tmp)
        else:
            found = Path(checkpoint)
            if not found.exists():
                raise CheckpointNotFoundError(f"{found}: no such checkpoint; {NO_CHECKPOINT_HINT}")
            source = str(found)
        tm = load_trained(found, device)
    audio = audio_config_for(tm.model, tm.audio_kind)
    meta = {k: tm.meta.get(k) for k in ("stage", "step") if k in tm.meta}
    return LoadedModel(tm.model, tm.face_model, audio, tm.contract, source, meta, shipped)


def audio_config_for(model: torch.nn.Module, kind: str = "mel") -> AudioConfig:
    """The audio features a model reads: ``kind`` with its window and (mel) bin count from the model's config;
    model files of the other kinds at :class:`AudioConfig`'s default places."""
    cfg = model.config
    return AudioConfig(kind=kind, window=int(cfg.audio_window), n_mels=int(cfg.audio_dim) if kind == "mel" else 80)

"""Checkpoints of trained models: what is saved, how it is checked when loaded, and where the newest one is.

Training writes them (``avface.train``); inference and evaluation read them, without the training package.

A checkpoint is one ``torch.save`` file (``checkpoint.pt``) of plain containers and tensors, loaded with
``torch.load(weights_only=True)``::

    format        "avface-checkpoint/1"
    stage         training stage that wrote it (pretrain | coarse | lip | detail | occlusion)
    step, epoch   optimiser steps of this stage so far; epochs begun (resume point, see avface.train.data)
    model         AVFace.trainable_state_dict() (never the frozen pretrained perceptual networks)
    optimizer     the stage's Adam state dict (absent in a stage's final export)
    model_config  AVFaceConfig.to_dict() (audio_dim included)
    train_config  the resolved TrainConfig as a dict
    audio_kind    feature kind of the shards it was trained on (mel | deepspeech | wav2vec2 | phones)
    face_model    {"name", "fingerprint", "source"} of the face model (source: its file, None = starter model)
    extras        stage data (e.g. pretraining parameter scales, camera init, MLflow run ids, metrics)
    input_contract  InputContract.to_dict() of the shards it was trained on (avface.trained.contract); a
                  checkpoint without one loads with the legacy contract and a warning

Loading a checkpoint into another face model or for another audio kind is a :class:`CheckpointError` naming both;
so is a truncated or foreign file.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avface.face_model import FaceModel, load_face_model
from avface.models.avface import AVFace
from avface.models.config import AVFaceConfig
from avface.models.stages import model_stage
from avface.trained.contract import InputContract, LandmarkInputMismatch, face_model_fingerprint, legacy_contract
from avface.utils.files import atomic_path

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "CHECKPOINT_FILE", "FINAL_FILE", "DEFAULT_TRAINING_OUT", "DEFAULT_REGISTERED_MODEL",
           "SHIPPED_MODEL", "CheckpointError", "TrainedModel", "shipped_model", "save_checkpoint", "read_checkpoint",
           "input_contract_of", "check_compatible", "load_trained", "find_latest_checkpoint"]

FORMAT = "avface-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.pt"  # inside a Ray Train checkpoint directory
FINAL_FILE = "final.pt"  # a stage's exported final model: <out>/<name>/<stage>/final.pt
DEFAULT_TRAINING_OUT = "runs/train"  # where training writes (TrainConfig.out) and inference looks by default
DEFAULT_REGISTERED_MODEL = "avface"  # the MLflow registry name of the final model (TrainConfig.tracking)
#: the project's shipped default model (trained on its synthetic corpus: avface/assets/default_model/MODEL_CARD.md),
#: what inference uses when the user has no trained or registered model; ``$AVFACE_DEFAULT_MODEL`` replaces it
#: (``none``: no fallback)
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default_model" / "avface-tiny.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here: truncated, not ours, or for another face model / audio kind."""


def save_checkpoint(path: str | os.PathLike, *, model: AVFace, stage: str, step: int, epoch: int,
                    audio_kind: str, face_model_source: str | None, train_config: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None, extras: dict[str, Any] | None = None,
                    input_contract: InputContract | dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (a killed writer never leaves a truncated file under ``path``).

    ``input_contract``: how the training inputs were made (training always gives it); None writes none, and the
    checkpoint loads with the legacy contract and a warning."""
    fm = model.face_model
    payload = {
        "format": FORMAT, "stage": stage, "step": int(step), "epoch": int(epoch),
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
        "model_config": model.config.to_dict(), "train_config": train_config or {},
        "audio_kind": str(audio_kind),
        "face_model": {"name": fm.name, "fingerprint": face_model_fingerprint(fm), "source": face_model_source},
        "extras": _plain(extras or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if input_contract is not None:
        contract = input_contract if isinstance(input_contract, InputContract) else \
            InputContract.from_dict(input_contract)
        payload["input_contract"] = contract.to_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path


def _plain(x: Any) -> Any:
    """numpy scalars/arrays -> tensors/Python numbers (weights_only loading accepts those)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, np.generic):
        return x.item()
    return x


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate the container (not yet the model): errors name the file and the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an avface checkpoint (format {got!r}, expected {FORMAT!r})")
    for key in ("model", "model_config", "audio_kind", "face_model", "stage", "step"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    ckpt["path"] = str(path)
    return ckpt


def input_contract_of(ckpt: dict[str, Any]) -> InputContract:
    """The checkpoint's input contract (:func:`read_checkpoint`'s dict); one written before contracts existed gets
    :func:`~avface.trained.contract.legacy_contract` and a warning naming the file."""
    if ckpt.get("input_contract") is not None:
        return InputContract.from_dict(ckpt["input_contract"])
    contract = legacy_contract(ckpt["model_config"], ckpt["audio_kind"], ckpt.get("face_model"))
    log.warning("%s: the checkpoint does not record how its inputs were made (no input_contract): assuming "
                "%g fps and a crop scale of %g", ckpt.get("path", "checkpoint"), contract.fps, contract.crop_scale)
    return contract


def check_compatible(ckpt: dict[str, Any], *, face_model: FaceModel | None = None,
                     audio_kind: str | None = None, audio_dim: int | None = None,
                     landmark_points: str | None | bool = False) -> None:
    """Raise :class:`CheckpointError` when ``ckpt`` was trained for another face model or audio features, or (given
    ``landmark_points``: the detector point set of the data, None for none) on another landmark input."""
    where = ckpt.get("path", "checkpoint")
    if landmark_points is not False:
        try:
            input_contract_of(ckpt).check_landmark_points(landmark_points, str(where))
        except LandmarkInputMismatch as e:
            raise CheckpointError(str(e)) from e
    if face_model is not None:
        want = ckpt["face_model"]
        have = face_model_fingerprint(face_model)
        if want["fingerprint"] != have:
            # the same name, other bytes: most likely a starter model built (not read from its shipped file) on
            # another CPU, whose last bits differ; before the file was shipped, every checkpoint carried such a build
            same_name = (" (the same name: a starter model built on another machine before it was shipped as a "
                         "file differs in its last bits; train again with this version)"
                         if want["name"] == face_model.name else "")
            raise CheckpointError(
                f"{where}: trained with face model {want['name']!r} (fingerprint {want['fingerprint']}), but the "
                f"face model here is {face_model.name!r} (fingerprint {have}): use the same face model file"
                + same_name)
    if audio_kind is not None and ckpt["audio_kind"] != audio_kind:
        raise CheckpointError(f"{where}: trained on audio features {ckpt['audio_kind']!r}, but the data has "
                              f"{audio_kind!r}: preprocess with audio.kind={ckpt['audio_kind']} or train anew")
    if audio_dim is not None:
        trained_dim = int(ckpt["model_config"].get("audio_dim", -1))
        if trained_dim != int(audio_dim):
            raise CheckpointError(f"{where}: trained on {ckpt['audio_kind']!r} features of size {trained_dim}, but "
                                  f"the data has size {audio_dim}")


@dataclass
class TrainedModel:
    """A trained AVFace ready for inference (eval mode)."""

    model: AVFace
    face_model: FaceModel
    config: AVFaceConfig
    audio_kind: str
    audio_dim: int
    contract: InputContract  # how its inputs must be made (fps, window, crop, audio features)
    meta: dict[str, Any] = field(default_factory=dict)  # stage, step, path, extras of the checkpoint


def load_trained(path: str | os.PathLike, device: str = "cpu", face_model: FaceModel | None = None,
                 stage: str | None = None) -> TrainedModel:
    """Build the model a checkpoint describes and load its weights.

    Args:
        path: a ``checkpoint.pt`` / ``final.pt`` file or a Ray checkpoint directory.
        face_model: the face model to use; None loads the one the checkpoint records (starter model or its file).
        stage: how far ``forward`` runs (coarse | lip | detail); None = the furthest stage the checkpoint trained.
    """
    ckpt = read_checkpoint(path)
    config = AVFaceConfig.from_dict(ckpt["model_config"])
    if face_model is None:
        source = ckpt["face_model"].get("source")
        face_model = FaceModel(load_face_model(source), n_shape=config.coarse.n_shape,
                               n_expression=config.expression.n_expression)
    check_compatible(ckpt, face_model=face_model)
    model = AVFace(config, face_model)
    try:
        model.load_trainable_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt['path']}: weights do not fit the model it describes: {e}") from e
    deepest = ckpt.get("extras", {}).get("model_stage", model_stage(ckpt["stage"]))
    model.set_stage(stage or deepest)
    model.eval().to(device)
    meta = {k: ckpt[k] for k in ("stage", "step", "epoch", "path", "extras", "face_model") if k in ckpt}
    return TrainedModel(model, face_model, config, ckpt["audio_kind"], int(config.audio_dim), input_contract_of(ckpt),
                        meta)


def shipped_model() -> Path | None:
    """The default model to fall back on: ``$AVFACE_DEFAULT_MODEL`` (``none`` or empty: none), else
    :data:`SHIPPED_MODEL` when it exists."""
    env = os.environ.get("AVFACE_DEFAULT_MODEL")
    if env is not None:
        return None if env.strip().lower() in ("", "none") else Path(env)
    return SHIPPED_MODEL if SHIPPED_MODEL.is_file() else None


def find_latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """Newest exported stage model (``final.pt``) under ``root``, else the newest Ray ``checkpoint.pt``; None if
    there is neither."""
    root = Path(root)
    if not root.exists():
        return None
    for pattern in (f"**/{FINAL_FILE}", f"**/{CHECKPOINT_FILE}"):
        found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None

"""The input contract of a trained model: how the frames and audio it was trained on were made.

Every checkpoint carries one (``input_contract``, a plain dict). Training writes it from the shards it read
(:func:`contract_from_summary` over ``avface.data.shard_index.data_summary``); inference and evaluation read it so
that a video is framed, timed and featurised like the training windows (``avface.inference.reconstruct``).

A checkpoint written before the contract existed gets :func:`legacy_contract`: the fixed values inference used
then (25 fps, crop scale 2.2) with the audio and face model the checkpoint itself records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["FACE_CROP_FRAMING", "InputContract", "LEGACY", "LandmarkInputMismatch", "contract_from_summary",
           "face_model_fingerprint", "legacy_contract"]

#: crop side / landmark extent of whole frames of face-crop videos (VoxCeleb2-style, preprocessed with
#: ``video.crop=none``; the synthetic corpus frames the face at 1.96..2.58): the landmark crop that reproduces them
FACE_CROP_FRAMING = 2.2


@dataclass(frozen=True)
class InputContract:
    """What a trained model expects of its inputs.

    ``crop`` is how preprocessing framed the stored frames (``none``: whole frames of face-crop videos |
    ``landmarks``: square boxes around the landmarks); ``crop_scale`` is the face framing of those frames, crop
    side / landmark extent (``avface.utils.boxes.boxes_from_landmarks``): the shards' ``video.crop_scale`` for
    ``landmarks``, :data:`FACE_CROP_FRAMING` for ``none``. Inference crops every video at ``crop_scale``.
    """

    fps: float = 25.0  # frames per second of the model's timeline (preprocessing's video.fps)
    window: int = 16  # frames per training window (shards.window)
    image_size: int = 224  # side of the stored frames (video.image_size); the model resizes to its own
    crop: str = "none"  # none | landmarks (avface.data.config.Crop)
    crop_scale: float = FACE_CROP_FRAMING
    audio_kind: str = "mel"  # avface.audio.config.AudioKind
    audio_dim: int = 80  # F of the (T, audio_window, F) features
    audio_window: int = 16  # audio feature rows per video frame
    audio_mean: tuple[float, ...] | None = None  # (F,) per-channel statistics the audio encoders standardise with
    audio_std: tuple[float, ...] | None = None
    face_model: str | None = None  # name of the face model trained with
    face_model_fingerprint: str | None = None  # :func:`face_model_fingerprint` of it
    # the landmark input (``AVFaceConfig.landmark_input``): the detector's point set the model reads
    # (``avface.landmarks.detector.POINT_SETS``: mediapipe478 | ...); None: the image-only model
    landmark_points: str | None = None

    def check_landmark_points(self, point_set: str | None, where: str = "") -> None:
        """Raise :class:`LandmarkInputMismatch` when the model reads landmarks and ``point_set`` (what the detector
        or the shards give; None: no points) is not the set it was trained on. An image-only model takes any."""
        if self.landmark_points is None or point_set == self.landmark_points:
            return
        raise LandmarkInputMismatch(
            f"{where + ': ' if where else ''}the model reads the landmark detector's {self.landmark_points!r} points "
            f"(its input contract), but {'there are no detector points' if point_set is None else repr(point_set)} "
            f"here: use the detector it was trained with (MediaPipe face mesh for mediapipe478), or preprocess "
            "with landmarks.store_points=true")

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (``torch.load(weights_only=True)`` reads them back)."""
        d = dataclasses.asdict(self)
        for k in ("audio_mean", "audio_std"):
            d[k] = None if d[k] is None else [float(v) for v in d[k]]
        return d

    def resolve(self, name: str, given: float | None, where: str = "") -> float:
        """The value of ``name`` (``fps``, ``crop_scale``) to use: the contract's, or ``given`` where it is set (a
        user's override), with a warning when it differs from what the model was trained with."""
        trained = float(getattr(self, name))
        if given is None:
            return trained
        if not math.isclose(float(given), trained, rel_tol=1e-6):
            log.warning("%s%s %g differs from the %g the model was trained with (its input contract)",
                        f"{where}: " if where else "", name, float(given), trained)
        return float(given)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputContract:
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored, missing ones take defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("audio_mean", "audio_std"):
            if kw.get(k) is not None:
                kw[k] = tuple(float(v) for v in kw[k])
        for k, typ in (("fps", float), ("crop_scale", float), ("window", int), ("image_size", int),
                       ("audio_dim", int), ("audio_window", int)):
            if k in kw:
                kw[k] = typ(kw[k])
        return cls(**kw)


class LandmarkInputMismatch(ValueError):
    """The detector points given differ from the point set a landmark-input model was trained on."""


#: today's defaults, what a checkpoint without a contract was made with as far as anyone can tell
LEGACY = InputContract()


def face_model_fingerprint(face_model: torch.nn.Module) -> str:
    """sha256 (16 hex) of the geometry a checkpoint depends on: template, faces, shape/expression bases, joints.
    ``face_model``: an ``avface.face_model.FaceModel``."""
    h = hashlib.sha256()
    for name in ("v_template", "faces", "shapedirs", "J_regressor", "lmk68_faces", "lmk68_bary"):
        t = getattr(face_model, name).detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def legacy_contract(model_config: dict[str, Any], audio_kind: str,
                    face_model: dict[str, Any] | None = None) -> InputContract:
    """The contract of a model that does not record one: :data:`LEGACY`'s frames with the audio and face model the
    checkpoint does record (``model_config``: ``AVFaceConfig.to_dict()``; ``face_model``: {"name", "fingerprint"})."""
    mean, std = model_config.get("audio_mean"), model_config.get("audio_std")
    return dataclasses.replace(
        LEGACY, window=int(model_config.get("window", LEGACY.window)), audio_kind=str(audio_kind),
        audio_dim=int(model_config.get("audio_dim", LEGACY.audio_dim)),
        audio_window=int(model_config.get("audio_window", LEGACY.audio_window)),
        audio_mean=None if mean is None else tuple(float(v) for v in mean),
        audio_std=None if std is None else tuple(float(v) for v in std),
        face_model=(face_model or {}).get("name"), face_model_fingerprint=(face_model or {}).get("fingerprint"))


def contract_from_summary(summary: dict[str, Any], *, face_model: torch.nn.Module,
                          audio_mean: list[float] | None = None,
                          audio_std: list[float] | None = None, landmark_input: bool = False) -> InputContract:
    """The contract of a model trained on the shards ``summary`` describes (``data_summary``: fps, window,
    image_sizes, crop, crop_scale, audio_kind, audio_dim, audio_window, detector_points), with the audio statistics
    it standardises with and the face model it trains; ``landmark_input``: it reads the shards' detector points."""
    sizes = summary["image_sizes"]
    if len(sizes) != 1:
        raise ValueError(f"shards mix frame sizes {sizes}: one model is trained on one framing")
    crop = str(summary["crop"])
    if crop == "none":
        scale = FACE_CROP_FRAMING
    elif summary.get("crop_scale") is not None:
        scale = float(summary["crop_scale"])
    else:  # landmark-cropped shards from before the scale was recorded in meta.json
        scale = LEGACY.crop_scale
        log.warning("the shards were cropped around the landmarks but do not record video.crop_scale: the model's "
                    "input contract assumes %g", scale)
    return InputContract(
        fps=float(summary["fps"]), window=int(summary["window"]), image_size=int(sizes[0]), crop=crop,
        crop_scale=scale, audio_kind=str(summary["audio_kind"]), audio_dim=int(summary["audio_dim"]),
        audio_window=int(summary["audio_window"]),
        audio_mean=None if audio_mean is None else tuple(float(v) for v in audio_mean),
        audio_std=None if audio_std is None else tuple(float(v) for v in audio_std),
        face_model=str(face_model.name), face_model_fingerprint=face_model_fingerprint(face_model),
        landmark_points=summary.get("detector_points") if landmark_input else None)

"""The model's typed input: :class:`Batch` (and its :class:`ParamTargets`), fields and shapes documented once here.

The model defines the contract it consumes (models sit below data in the layers); ``avface.data.batch`` builds it
from decoded shard samples (``samples_to_batch``) and re-exports these names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Batch", "ParamTargets", "PARAM_NAMES"]

# The ground-truth parameter groups a decoded sample's ``gt`` dict carries (synthetic clips only).
PARAM_NAMES: tuple[str, ...] = ("shape", "expression", "jaw", "global_pose", "neck_pose", "eye_pose", "cam",
                                "lip_detail", "albedo", "light")


def _move(x: Any, device: torch.device | str, non_blocking: bool) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, ParamTargets):
        return x.to(device, non_blocking=non_blocking)
    return x


@dataclass
class ParamTargets:
    """Ground-truth face-model parameters of a batch (the synthetic corpus's exact parameters).

    Per frame: ``shape (B,T,NS)``, ``expression (B,T,NE)``, ``jaw (B,T,3)``, ``global_pose (B,T,3)``,
    ``neck_pose (B,T,3)``, ``eye_pose (B,T,6)`` (axis-angle), ``cam (B,T,3)`` orthographic (s, tx, ty).
    Optional per frame: ``lip_detail (B,T,C)``, the lips' motion outside the expression space
    (``FaceModel(..., lip_detail=)``, :mod:`avface.face_model.lip_detail`), part of the true mesh.
    Per window: ``albedo (B,NA)`` and ``light (B,9,3)`` (SH coefficients), None when the samples lack them.
    ``valid (B,T)`` bool: the frames whose targets supervise (fitted pseudo-ground truth: frames fitted, with a
    landmark residual under the stage's threshold); None: every frame (exact ground truth).
    """

    shape: torch.Tensor
    expression: torch.Tensor
    jaw: torch.Tensor
    global_pose: torch.Tensor
    neck_pose: torch.Tensor
    eye_pose: torch.Tensor
    cam: torch.Tensor
    lip_detail: torch.Tensor | None = None
    albedo: torch.Tensor | None = None
    light: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ParamTargets:
        return dataclasses.replace(self, **{f.name: _move(getattr(self, f.name), device, non_blocking)
                                            for f in dataclasses.fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The present parameter groups by name (absent albedo / light left out; not the ``valid`` mask)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None and f.name != "valid"}


@dataclass
class Batch:
    """A model batch of B windows of T frames at the model's input side S (every tensor on one device).

    Required:

    - ``images (B,T,3,S,S)`` float in [0, 1] (from the sample's ``frames (T,H,W,3)`` u8, resized to S).
    - ``landmarks (B,T,68,2)`` float, iBUG-68 pixel coordinates at S (scaled with the resize).

    Filled by ``__post_init__`` when not given (so a hand-built batch needs only the two above):

    - ``landmarks_valid (B,T)`` bool: False where no face was found (default all True).
    - ``audio_valid (B,T)`` bool: False for frames without usable audio; the model zeroes the audio embedding
      there. ``samples_to_batch``: False where the sample's audio features of that frame are all zero (how missing
      or padded audio is stored) or the sample's meta says ``has_audio: false``. Default: True where ``audio`` is
      given, all False when ``audio`` is None.
    - ``video_valid (B,T)`` bool: False for frames whose image carries no face; the model zeroes the video
      embedding there. Rule: ``video_valid = landmarks_valid`` (a frame where the detector found no face has no
      usable face crop). Default: ``landmarks_valid``.
    - ``identity (B,)`` int64 speaker labels, equal for windows of one speaker (shape consistency); labels are
      batch-local (0..); default: every window its own speaker.

    Optional (None when any sample lacks them: a missing pseudo-ground truth never becomes a fake zero target):

    - ``audio (B,T,16,F)`` float: per frame, the audio-feature window centred on it (from ``audio_features``).
    - ``normals (B,T,3,S,S)`` float unit vectors, pseudo-ground-truth normals in the renderer's camera frame
      (+x right, +y up, +z to the viewer), zeros off the face.
    - ``occlusion_mask (B,T,S,S)`` float in [0, 1], 1 = occluded (excluded from photometric/normal losses).
    - ``occluded (B,)`` bool: the window is an occluded copy (meta ``occluded``).
    - ``clean_images (B,T,3,S,S)``: the same windows without the synthetic occluder (an occluded copy's clean
      twin; a clean window's own images), framed like ``images``: the teacher's input of the occlusion fine-tune.
    - ``points (B,T,P,3)`` float: the landmark detector's full point set (the model's landmark input,
      ``AVFaceConfig.landmark_input``), x, y pixels at S, z relative depth in the same units; zeros where not
      detected; with ``points_valid (B,T)`` bool (False: not detected, the landmark embedding is zero there).
    - ``targets``: :class:`ParamTargets` ground-truth parameters (present in every sample, or None).
    - ``keys``: the B sample keys (for logging and exactly-once checks).
    """

    images: torch.Tensor
    landmarks: torch.Tensor
    landmarks_valid: torch.Tensor = None  # type: ignore[assignment]  # filled in __post_init__
    audio_valid: torch.Tensor = None  # type: ignore[assignment]
    video_valid: torch.Tensor = None  # type: ignore[assignment]
    identity: torch.Tensor = None  # type: ignore[assignment]
    audio: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    occlusion_mask: torch.Tensor | None = None
    occluded: torch.Tensor | None = None
    clean_images: torch.Tensor | None = None
    targets: ParamTargets | None = None
    keys: list[str] | None = None
    points: torch.Tensor | None = None
    points_valid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 5 or self.images.shape[2] != 3:
            raise ValueError(f"Batch.images must be (B,T,3,S,S), got {tuple(self.images.shape)}")
        b, t = self.images.shape[:2]
        dev = self.images.device
        if tuple(self.landmarks.shape) != (b, t, 68, 2):
            raise ValueError(f"Batch.landmarks must be {(b, t, 68, 2)}, got {tuple(self.landmarks.shape)}")
        if self.audio is not None and (self.audio.ndim != 4 or tuple(self.audio.shape[:2]) != (b, t)):
            raise ValueError(f"Batch.audio must be (B,T,16,F) with B,T = {b},{t}, got {tuple(self.audio.shape)}")
        if self.clean_images is not None and self.clean_images.shape != self.images.shape:
            raise ValueError(f"Batch.clean_images must be {tuple(self.images.shape)} like images, "
                             f"got {tuple(self.clean_images.shape)}")
        if self.points is not None:
            if self.points.ndim != 4 or tuple(self.points.shape[:2]) != (b, t) or self.points.shape[-1] != 3:
                raise ValueError(f"Batch.points must be (B,T,P,3) with B,T = {b},{t}, got {tuple(self.points.shape)}")
            if self.points_valid is None:
                self.points_valid = torch.ones(b, t, dtype=torch.bool, device=dev)
            if tuple(self.points_valid.shape) != (b, t):
                raise ValueError(f"Batch.points_valid must be {(b, t)}, got {tuple(self.points_valid.shape)}")
        if self.landmarks_valid is None:
            self.landmarks_valid = torch.ones(b, t, dtype=torch.bool, device=dev)
        if self.audio_valid is None:
            self.audio_valid = torch.full((b, t), self.audio is not None, dtype=torch.bool, device=dev)
        if self.video_valid is None:
            self.video_valid = self.landmarks_valid.clone()
        if self.identity is None:
            self.identity = torch.arange(b, device=dev)
        for name in ("landmarks_valid", "audio_valid", "video_valid"):
            if tuple(getattr(self, name).shape) != (b, t):
                raise ValueError(f"Batch.{name} must be {(b, t)}, got {tuple(getattr(self, name).shape)}")
        if tuple(self.identity.shape) != (b,):
            raise ValueError(f"Batch.identity must be ({b},), got {tuple(self.identity.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def window(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return dataclasses.replace(self, **{f.name: _move(getattr(self, f.name), device, non_blocking)
                                            for f in dataclasses.fields(self)})

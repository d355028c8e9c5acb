"""Decoded shard samples -> the model's typed batch (the one bridge between `avface.data` and `avface.models`).

Shard samples (``avface.data.sample.decode_sample``) are numpy, one T-frame window each, at the preprocessing
resolution. The model (``avface.models.AVFace``) takes a :class:`Batch` of torch tensors at its own input side S.
The fields and their shapes are documented once, in :class:`Batch` and :class:`ParamTargets`
(``avface/models/inputs.py``: the model defines the contract it consumes; re-exported here).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from avface.models.inputs import PARAM_NAMES, Batch, ParamTargets

__all__ = ["Batch", "ParamTargets", "PARAM_NAMES", "TARGET_SOURCES", "TargetSource", "MissingFitError",
           "samples_to_batch", "fitted_targets"]

#: where ``Batch.targets`` come from: ``exact`` the synthetic corpus's ground truth (``gt``), ``fitted`` the
#: pseudo-ground truth of preprocessing's ``fit.enabled`` (``fit``)
TargetSource = Literal["exact", "fitted"]
TARGET_SOURCES: tuple[str, ...] = ("exact", "fitted")

#: how to make the fitted parameters (named in the errors)
FIT_OPTION = "preprocess with fit.enabled=true (pipelines/preprocess.py fit.enabled=true)"


class MissingFitError(ValueError):
    """A sample without the fitted pseudo-ground truth (``fit_params.npy``) where it was asked for."""


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size); a no-op at the same size."""
    if x.shape[-2:] == (size, size):
        return x
    kwargs = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)


def _targets(samples: list[dict[str, Any]]) -> ParamTargets | None:
    """ParamTargets from the samples' ``gt`` dicts (per-window ``(T,k)`` arrays, ``albedo (NA,)``,
    ``light (9,3)``); None unless every sample has one."""
    if not all(isinstance(s.get("gt"), dict) for s in samples):
        return None
    per_frame = ("shape", "expression", "jaw", "global_pose", "neck_pose", "eye_pose", "cam")
    values: dict[str, torch.Tensor | None] = {}
    for name in PARAM_NAMES:
        present = [name in s["gt"] for s in samples]
        if not all(present):
            if name in per_frame:
                missing = next(s.get("key") for s, p in zip(samples, present, strict=True) if not p)
                raise ValueError(f"sample {missing}: ground-truth parameters lack {name!r}")
            values[name] = None
            continue
        arrays = [np.asarray(s["gt"][name], dtype=np.float32) for s in samples]
        try:
            values[name] = torch.from_numpy(np.stack(arrays))
        except ValueError as e:
            raise ValueError(f"ground-truth {name!r} differs in shape across samples: "
                             f"{sorted({a.shape for a in arrays})}") from e
    return ParamTargets(**values)  # type: ignore[arg-type]


def fitted_targets(samples: list[dict[str, Any]], max_residual: float = float("inf")) -> ParamTargets:
    """ParamTargets from the samples' fitted pseudo-ground truth (``fit``, ``fit_valid``, ``fit_residual``):
    shape, expression, jaw, global pose and camera as fitted, neck and eye pose zero (the fit has none), no
    albedo, light or lip detail; ``valid (B,T)`` = fitted and residual <= ``max_residual``. Never reads ``gt``."""
    for s in samples:
        if "fit" not in s:
            raise MissingFitError(f"sample {s.get('key') or s['meta'].get('key')} has no fitted pseudo-ground truth "
                                  f"(fit_params.npy): {FIT_OPTION}")

    def stack(name: str) -> torch.Tensor:
        try:
            return torch.from_numpy(np.stack([np.asarray(s["fit"][name], np.float32) for s in samples]))
        except ValueError as e:
            raise ValueError(f"fitted {name!r} differs in shape across samples") from e

    groups = {name: stack(name) for name in ("shape", "expression", "jaw", "global_pose", "cam")}
    b, t = groups["cam"].shape[:2]
    valid = torch.from_numpy(np.stack([np.asarray(s["fit_valid"], bool) for s in samples]))
    residual = torch.from_numpy(np.stack([np.asarray(s["fit_residual"], np.float32) for s in samples]))
    valid = valid & torch.isfinite(residual) & (residual <= max_residual)
    return ParamTargets(**groups, neck_pose=torch.zeros(b, t, 3), eye_pose=torch.zeros(b, t, 6), valid=valid)


def samples_to_batch(samples: list[dict[str, Any]], image_size: int | None = None,
                     clean: list[dict[str, Any]] | None = None, targets: TargetSource = "exact",
                     fit_max_residual: float = float("inf")) -> Batch:
    """Stack decoded samples into a :class:`Batch` (fields, shapes and validity rules: see :class:`Batch`).

    Args:
        samples: decoded samples (``decode_sample``), all with the same window length T and frame size.
        image_size: the model's input side S; None keeps the samples' resolution (square frames).
        clean: per sample, the same window without the synthetic occluder (an occluded copy's clean twin, a
            clean sample itself): ``Batch.clean_images``. None: no clean images.
        targets: ``exact``: ``Batch.targets`` from the ground truth (None unless every sample has it);
            ``fitted``: from the fitted pseudo-ground truth (:func:`fitted_targets`, frames with a residual above
            ``fit_max_residual`` masked; :class:`MissingFitError` for a sample without it).
    """
    if not samples:
        raise ValueError("samples_to_batch needs at least one sample")
    if targets not in TARGET_SOURCES:
        raise ValueError(f"targets must be one of {TARGET_SOURCES}, got {targets!r}")
    t, h, w, _ = samples[0]["frames"].shape
    for s in samples:
        if s["frames"].shape != (t, h, w, 3):
            raise ValueError(f"sample {s['meta'].get('key')}: frames {s['frames'].shape} differ from {(t, h, w, 3)}")
    size = image_size or h
    if image_size is None and h != w:
        raise ValueError(f"frames are {h}x{w}: give image_size to resize them to a square model input")
    b = len(samples)

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([s[name] for s in samples]))

    def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
        """(B,T,H,W,3) u8 -> (B,T,3,S,S) float in [0, 1]."""
        x = frames.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float() / 255.0
        return _resize(x, size, "bilinear").clamp(0, 1).reshape(b, t, 3, size, size)

    clean_images = None
    if clean is not None:
        if len(clean) != b:
            raise ValueError(f"samples_to_batch: {len(clean)} clean windows for {b} samples")
        for s, c in zip(samples, clean, strict=True):
            if c["frames"].shape != (t, h, w, 3) or (c["meta"].get("clip_id"), c["meta"].get("start")) != (
                    s["meta"].get("clip_id"), s["meta"].get("start")):
                raise ValueError(f"sample {s['meta'].get('key')}: clean window {c['meta'].get('key')} is not its "
                                 "twin (another clip, start or frame size)")
        clean_images = frames_to_images(torch.from_numpy(np.stack([c["frames"] for c in clean])))
    audio = stack("audio_features").float()
    has_audio = torch.tensor([s["meta"].get("has_audio", True) is not False for s in samples])
    audio_valid = (audio.flatten(2).abs().amax(-1) > 0) & has_audio[:, None]
    landmarks_valid = stack("landmarks_valid").bool()
    normals = occlusion = None
    if all("normals" in s for s in samples):
        n = stack("normals").permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()
        # Resampling averages neighbouring unit vectors: renormalise (background stays zero).
        normals = F.normalize(_resize(n, size, "bilinear"), dim=1, eps=1e-6).reshape(b, t, 3, size, size)
    if all("occlusion_mask" in s for s in samples):
        masks = stack("occlusion_mask").reshape(b * t, 1, h, w).float() / 255.0
        occlusion = _resize(masks, size, "bilinear").clamp(0, 1).reshape(b, t, size, size)
    points = points_valid = None
    if all("detector_points" in s for s in samples):
        sets = {s["meta"].get("detector_points") for s in samples}
        if len(sets) > 1:
            raise ValueError(f"samples mix detector point sets {sorted(map(str, sets))}")
        # x, y with the resize; depth in the units of x
        points = stack("detector_points").float() * torch.tensor([size / w, size / h, size / w])
        points_valid = stack("detector_valid").bool()
    speakers = [str(s["meta"].get("identity", s["meta"].get("key"))) for s in samples]
    index = {name: i for i, name in enumerate(dict.fromkeys(speakers))}
    return Batch(
        images=frames_to_images(stack("frames")),
        landmarks=stack("landmarks").float() * torch.tensor([size / w, size / h]),
        landmarks_valid=landmarks_valid,
        audio_valid=audio_valid,
        video_valid=landmarks_valid.clone(),
        identity=torch.tensor([index[name] for name in speakers], dtype=torch.long),
        audio=audio,
        normals=normals,
        occlusion_mask=occlusion,
        occluded=torch.tensor([bool(s["meta"].get("occluded", False)) for s in samples]),
        clean_images=clean_images,
        targets=fitted_targets(samples, fit_max_residual) if targets == "fitted" else _targets(samples),
        keys=[str(s.get("key") or s["meta"].get("key")) for s in samples],
        points=points,
        points_valid=points_valid,
    )

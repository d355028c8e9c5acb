"""Decoded shard samples -> the model's batch (the one bridge between `avface.data` and `avface.models`).

Shard samples (``avface.data.sample.decode_sample``) are numpy, one 16-frame window each, at the preprocessing
resolution. The model (``avface.models.AVFace``) takes torch tensors at its own ``image_size``:

==================  ==========================================  ==========================================
model key           from the sample                             shape / meaning
==================  ==========================================  ==========================================
``images``          ``frames`` (T,H,W,3) u8                     (B,T,3,S,S) float in [0, 1], resized to S
``audio``           ``audio_features`` (T,16,F)                 (B,T,16,F) float
``landmarks``       ``landmarks`` (T,68,2) px                   (B,T,68,2) px, scaled to S
``landmarks_valid`` ``landmarks_valid`` (T,)                    (B,T) bool
``normals``         ``normals`` (T,H,W,3) (optional)            (B,T,3,S,S) unit vectors (camera frame)
``occlusion_mask``  ``occlusion_mask`` (T,H,W) u8 (optional)    (B,T,S,S) float in [0, 1], 1 = occluded
``identity``        ``meta["identity"]``                        (B,) int64, equal for windows of one speaker
==================  ==========================================  ==========================================

Optional keys are present in the batch only when every sample has them (a missing pseudo-ground truth must
not become a fake zero target).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["samples_to_batch"]


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size); a no-op at the same size."""
    if x.shape[-2:] == (size, size):
        return x
    kwargs = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)


def samples_to_batch(samples: list[dict[str, Any]], image_size: int | None = None) -> dict[str, torch.Tensor]:
    """Stack decoded samples into a model batch (see the module docstring for keys and shapes).

    Args:
        samples: decoded samples (``decode_sample``), all with the same window length T and frame size.
        image_size: the model's input side S; None keeps the samples' resolution (square frames).
    """
    if not samples:
        raise ValueError("samples_to_batch needs at least one sample")
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

    images = stack("frames").permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float() / 255.0
    batch: dict[str, torch.Tensor] = {
        "images": _resize(images, size, "bilinear").clamp(0, 1).reshape(b, t, 3, size, size),
        "audio": stack("audio_features").float(),
        "landmarks": stack("landmarks").float() * torch.tensor([size / w, size / h]),
        "landmarks_valid": stack("landmarks_valid").bool(),
    }
    if all("normals" in s for s in samples):
        normals = stack("normals").permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()
        # Resampling averages neighbouring unit vectors: renormalise (background stays zero).
        normals = F.normalize(_resize(normals, size, "bilinear"), dim=1, eps=1e-6)
        batch["normals"] = normals.reshape(b, t, 3, size, size)
    if all("occlusion_mask" in s for s in samples):
        masks = stack("occlusion_mask").reshape(b * t, 1, h, w).float() / 255.0
        batch["occlusion_mask"] = _resize(masks, size, "bilinear").clamp(0, 1).reshape(b, t, size, size)
    speakers = [str(s["meta"].get("identity", s["meta"].get("key"))) for s in samples]
    index = {name: i for i, name in enumerate(dict.fromkeys(speakers))}
    batch["identity"] = torch.tensor([index[name] for name in speakers], dtype=torch.long)
    return batch

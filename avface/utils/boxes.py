"""Face boxes from 2-D landmarks: the tight extent (optionally extended over the forehead) and the smoothed square
crop boxes built on it. Boxes are ``(x0, y0, x1, y1)`` in pixels."""

from __future__ import annotations

import numpy as np

__all__ = ["boxes_from_landmarks", "extent_boxes"]


def extent_boxes(landmarks: np.ndarray, forehead: float = 0.0) -> np.ndarray:
    """``(T, K, 2)`` pixel landmarks -> ``(T, 4)`` tight xyxy boxes of each frame's points. ``forehead`` extends the
    top by that fraction of the box height (the 68 points stop at the brows)."""
    lo = landmarks.min(axis=1)
    hi = landmarks.max(axis=1)
    top = lo[:, 1] - forehead * (hi[:, 1] - lo[:, 1])
    return np.stack([lo[:, 0], top, hi[:, 0], hi[:, 1]], axis=1)


def boxes_from_landmarks(landmarks: np.ndarray, valid: np.ndarray, scale: float, image_hw: tuple[int, int],
                         smooth: int = 5) -> np.ndarray:
    """``(T, 4)`` square boxes ``(x0, y0, x1, y1)`` px: centre of the landmark extent, side ``scale * extent``.

    Frames without valid landmarks take the nearest valid frame's box; with none valid, the centred square of the
    image. Centres and sizes are smoothed with a centred moving average of ``smooth`` frames.
    """
    t = len(landmarks)
    h, w = image_hw
    if not np.any(valid):
        side = float(min(h, w))
        c = np.array([w / 2.0, h / 2.0])
        return np.tile(np.r_[c - side / 2, c + side / 2], (t, 1)).astype(np.float32)
    extent = extent_boxes(landmarks)
    lo, hi = extent[:, :2], extent[:, 2:]
    centre = (lo + hi) / 2.0
    side = scale * np.max(hi - lo, axis=1)
    idx = np.flatnonzero(valid)
    nearest = idx[np.abs(np.arange(t)[:, None] - idx[None, :]).argmin(axis=1)]
    centre, side = centre[nearest], side[nearest]
    if smooth > 1 and t > 1:
        k = np.ones(smooth) / smooth
        pad = smooth // 2
        centre = np.stack([np.convolve(np.pad(centre[:, j], pad, mode="edge"), k, mode="valid")[:t]
                           for j in range(2)], 1)
        side = np.convolve(np.pad(side, pad, mode="edge"), k, mode="valid")[:t]
    side = np.maximum(side, 8.0)
    return np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], 1).astype(np.float32)

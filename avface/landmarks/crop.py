"""Square face boxes from landmarks, temporal smoothing, crop + resize of frames and landmarks."""

from __future__ import annotations

import cv2
import numpy as np


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
    lo, hi = landmarks.min(axis=1), landmarks.max(axis=1)
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


def crop_resize(frame: np.ndarray, box: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop ``box`` (may leave the image: zero padding) and resize to ``size``; returns (image, scale, offset)
    such that ``p_out = (p_in - offset) * scale`` for pixel coordinates."""
    x0, y0, x1, y1 = (float(v) for v in box)
    s = size / max(x1 - x0, 1e-6)
    # continuous pixel coords (centre of pixel c at c + 0.5): u_out = (u_in - x0) * s; OpenCV's matrix maps pixel
    # indices, hence the half-pixel terms
    m = np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5]], np.float32)
    out = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, np.float32(s), np.array([x0, y0], np.float32)

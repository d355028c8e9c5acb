"""Crop + resize of frames and landmarks (the boxes: :func:`avface.utils.boxes.boxes_from_landmarks`)."""

from __future__ import annotations

import cv2
import numpy as np


def crop_resize(frame: np.ndarray, box: np.ndarray, size: int, interpolation: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop ``box`` (may leave the image: zero padding) and resize to ``size``; returns (image, scale, offset)
    such that ``p_out = (p_in - offset) * scale`` for pixel coordinates. ``interpolation``: an OpenCV flag
    (default: area when shrinking, linear when enlarging; nearest for maps that must not blend, like normals)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    s = size / max(x1 - x0, 1e-6)
    # continuous pixel coords (centre of pixel c at c + 0.5): u_out = (u_in - x0) * s; OpenCV's matrix maps pixel
    # indices, hence the half-pixel terms
    m = np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5]], np.float32)
    if interpolation is None:
        interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(frame, m, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, np.float32(s), np.array([x0, y0], np.float32)

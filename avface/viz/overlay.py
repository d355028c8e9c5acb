"""Overlays on frames: landmarks and masks drawn where people can check alignment at a glance."""

from __future__ import annotations

import cv2
import numpy as np


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, color: tuple[int, int, int] = (40, 255, 40),
                   radius: int = 1) -> np.ndarray:
    """Draw 2D landmarks.

    Args:
        image: (H, W, 3) uint8 RGB (not modified).
        landmarks: (K, 2) pixel coordinates (pixel centres at +0.5, docs/ARCHITECTURE.md).
    Returns:
        (H, W, 3) uint8 RGB copy with a dot per landmark.
    """
    out = np.ascontiguousarray(image).copy()
    for x, y in np.asarray(landmarks, np.float32):
        # Pixel coordinates put pixel centres at +0.5; OpenCV draws at integer centres.
        cv2.circle(out, (int(np.floor(x)), int(np.floor(y))), radius, color, -1, lineType=cv2.LINE_8)
    return out


def tint_mask(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40),
              strength: float = 0.5) -> np.ndarray:
    """Blend ``color`` into the image where the mask is on.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) float in [0, 1] or uint8 in [0, 255].
    Returns:
        (H, W, 3) uint8 RGB.
    """
    m = np.asarray(mask, np.float32)
    if mask.dtype == np.uint8:
        m = m / 255.0
    a = (strength * m)[..., None]
    return (image.astype(np.float32) * (1 - a) + np.asarray(color, np.float32) * a).round().astype(np.uint8)

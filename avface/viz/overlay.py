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


#: the iBUG-68 contours: (first, last, closed): jaw, brows, nose bridge, nostrils, eyes, outer and inner lips
IBUG68_CONTOURS: tuple[tuple[int, int, bool], ...] = (
    (0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False), (36, 41, True),
    (42, 47, True), (48, 59, True), (60, 67, True))


def draw_landmark_contours(image: np.ndarray, landmarks: np.ndarray, color: tuple[int, int, int],
                           thickness: int = 1, radius: int = 1) -> np.ndarray:
    """Draw 68 iBUG landmarks as their contours (jaw, brows, nose, eyes, lips) with a dot per point: two sets drawn
    on one frame (e.g. a detector's and a model's) show their misalignment at a glance.

    Args:
        image: (H, W, 3) uint8 RGB (not modified).
        landmarks: (68, 2) pixel coordinates (pixel centres at +0.5).
    Returns:
        (H, W, 3) uint8 RGB copy.
    """
    out = np.ascontiguousarray(image).copy()
    pts = np.floor(np.asarray(landmarks, np.float64)).astype(np.int32)
    for a, b, closed in IBUG68_CONTOURS:
        cv2.polylines(out, [pts[a:b + 1].reshape(-1, 1, 2)], closed, color, thickness, lineType=cv2.LINE_AA)
    for x, y in pts:
        cv2.circle(out, (int(x), int(y)), radius, color, -1, lineType=cv2.LINE_8)
    return out


def draw_label(image: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int],
               scale: float = 0.4) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``text`` at ``origin`` (x, y of the baseline's start), in place."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return image

"""MediaPipe face mesh (468 points) -> iBUG-68.

One mapping for the whole project, the starter face model's table (:mod:`avface.face_model.starter`):
``MEDIAPIPE_TO_IBUG68`` for points 17..67, and the jaw contour 0..16 resampled by arc length along ``OVAL_JAW``,
the face oval from ear to ear over the chin.
"""

from __future__ import annotations

import numpy as np

from avface.face_model.starter import MEDIAPIPE_TO_IBUG68 as _STARTER_TABLE
from avface.face_model.starter import OVAL_JAW
from avface.landmarks.detector import DetectedPoints

_INNER = np.asarray([_STARTER_TABLE[i] for i in range(17, 68)], np.int64)
_OVAL = np.asarray(OVAL_JAW, np.int64)
#: MediaPipe ids of points 17..67 (-1 for the jaw contour 0..16, resampled along ``OVAL_JAW``)
MEDIAPIPE_TO_IBUG68: np.ndarray = np.concatenate([np.full(17, -1, np.int64), _INNER])


def _resample_polyline(poly: np.ndarray, n: int) -> np.ndarray:
    """``(..., K, D)`` polylines -> ``(..., n, D)`` points equally spaced by arc length (end points kept)."""
    seg = np.linalg.norm(np.diff(poly, axis=-2), axis=-1)  # (..., K-1)
    cum = np.concatenate([np.zeros(seg.shape[:-1] + (1,)), np.cumsum(seg, -1)], -1)  # (..., K)
    flat_poly = poly.reshape(-1, *poly.shape[-2:])
    flat_cum = cum.reshape(-1, cum.shape[-1])
    out = np.empty((len(flat_poly), n, poly.shape[-1]), np.float64)
    for b in range(len(flat_poly)):
        t = np.linspace(0, flat_cum[b, -1], n)
        for d in range(poly.shape[-1]):
            out[b, :, d] = np.interp(t, flat_cum[b], flat_poly[b, :, d])
    return out.reshape(*poly.shape[:-2], n, poly.shape[-1])


def mediapipe_to_ibug68(points: np.ndarray) -> np.ndarray:
    """``(..., 468 | 478, D)`` MediaPipe landmarks -> ``(..., 68, D)`` iBUG-68 (same dtype)."""
    points = np.asarray(points)
    jaw = _resample_polyline(points[..., _OVAL, :].astype(np.float64), 17).astype(points.dtype)
    return np.concatenate([jaw, points[..., _INNER, :]], axis=-2)


def mediapipe_detection(raw: np.ndarray, found: np.ndarray, image_hw: tuple[int, int]) -> DetectedPoints:
    """MediaPipe's output ``raw (T,P,3)`` (P = 478 | 468; normalised x, y in [0, 1] of the image, z relative depth
    in units of the image width) and ``found (T,)`` -> :class:`DetectedPoints` in pixels: ``u = x W`` (pixel
    centre c at c + 0.5), ``v = y H``, depth ``z W``; the iBUG-68 landmarks mapped from them; zeros where not found."""
    h, w = image_hw
    t, p = raw.shape[:2]
    found = np.asarray(found, bool)
    pts = np.zeros((t, p, 3), np.float32)
    lm = np.zeros((t, 68, 2), np.float32)
    if found.any():
        pts[found] = raw[found].astype(np.float32) * np.array([w, h, w], np.float32)
        # mapped in normalised coordinates, then scaled: the 68 points exactly as before the full set came back
        lm[found] = mediapipe_to_ibug68(raw[found, :, :2].astype(np.float32)) * np.array([w, h], np.float32)
    return DetectedPoints(lm, found, pts, f"mediapipe{p}")

"""MediaPipe face mesh (468 points) -> iBUG-68.

One mapping for the whole project: the face-model module's table (``avface.face_model.starter``:
``MEDIAPIPE_TO_IBUG68`` for points 17..67 and the jaw contour 0..16 resampled by arc length along ``OVAL_JAW``,
the face oval from ear to ear over the chin). If that module is unavailable, a widely used fixed 68-id table is
the fallback (:data:`FALLBACK_IDS`).
"""

from __future__ import annotations

import numpy as np

FALLBACK_IDS = np.asarray((
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
), np.int64)


def _face_model_table() -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from avface.face_model.starter import MEDIAPIPE_TO_IBUG68 as table
        from avface.face_model.starter import OVAL_JAW
    except Exception:  # noqa: BLE001 - not available: fallback table
        return None
    inner = np.asarray([table[i] for i in range(17, 68)], np.int64)
    return inner, np.asarray(OVAL_JAW, np.int64)


_TABLE = _face_model_table()
#: ids used for points 17..67 (and the jaw contour ids resampled for 0..16), or the fixed fallback table
MEDIAPIPE_TO_IBUG68: np.ndarray = FALLBACK_IDS if _TABLE is None else np.concatenate(
    [np.full(17, -1, np.int64), _TABLE[0]])


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
    if _TABLE is None:
        return points[..., FALLBACK_IDS, :]
    inner, oval = _TABLE
    jaw = _resample_polyline(points[..., oval, :].astype(np.float64), 17).astype(points.dtype)
    return np.concatenate([jaw, points[..., inner, :]], axis=-2)

"""MediaPipe face mesh (468 points) -> iBUG-68 ids.

The table is the widely used one (jaw 17, brows 10, nose 9, eyes 12, mouth 20) in iBUG order; the project's face
model module may provide its own table (``avface.face_model`` ``MEDIAPIPE_TO_IBUG68``), which is preferred when it
exists so that the whole project uses one mapping.
"""

from __future__ import annotations

import numpy as np

_FALLBACK = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)


def _table() -> np.ndarray:
    try:  # one mapping for the whole project when the face-model module ships it
        from avface.face_model import mediapipe as _fm  # type: ignore[attr-defined]

        t = np.asarray(_fm.MEDIAPIPE_TO_IBUG68, np.int64)
        if t.shape == (68,):
            return t
    except Exception:  # noqa: BLE001 - not there (yet): use ours
        pass
    return np.asarray(_FALLBACK, np.int64)


MEDIAPIPE_TO_IBUG68: np.ndarray = _table()
assert MEDIAPIPE_TO_IBUG68.shape == (68,)


def mediapipe_to_ibug68(points: np.ndarray) -> np.ndarray:
    """``(..., 468 | 478, D)`` MediaPipe landmarks -> ``(..., 68, D)`` iBUG-68."""
    return np.asarray(points)[..., MEDIAPIPE_TO_IBUG68, :]

"""A demo / test sequence from a real photo that ships with scikit-image (public domain astronaut portrait)."""

from __future__ import annotations

import cv2
import numpy as np

# Face box (xyxy, pixels) of `skimage.data.astronaut()` (512x512): cheeks to cheeks, hairline to chin.
ASTRONAUT_FACE_BOX = np.array([174.0, 64.0, 264.0, 168.0])
_CROP = np.array([69.0, 0.0, 369.0, 300.0])  # 300x300 window around the face (head, collar, background)


def astronaut_sequence(num_frames: int = 16, size: int = 224, seed: int = 0, shake_px: float = 3.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(T, size, size, 3) uint8 frames of the astronaut with a small synthetic camera shake, and (T, 4) xyxy face
    boxes in frame pixels. The shake is a smooth random walk of the crop window (in source pixels, bounded by
    `shake_px` per frame) plus a slight zoom, so the face moves like in a hand-held video."""
    from skimage.data import astronaut

    img = astronaut()
    rng = np.random.default_rng(seed)
    frames, boxes = [], []
    off = np.zeros(2)
    vel = np.zeros(2)
    for t in range(num_frames):
        if t > 0:
            vel = np.clip(0.7 * vel + rng.normal(0.0, shake_px / 2, 2), -shake_px, shake_px)
            off = np.clip(off + vel, -20, 20)
        zoom = 1.0 + 0.03 * np.sin(2 * np.pi * t / max(num_frames, 2))
        x0, y0, x1, y1 = _CROP
        cx, cy = (x0 + x1) / 2 + off[0], (y0 + y1) / 2 + off[1]
        half = (x1 - x0) / 2 / zoom
        s = size / (2 * half)
        # Affine from source to frame: x' = s (x - (cx - half)); y' likewise. Pixel centres: +0.5 convention.
        M = np.array([[s, 0, -s * (cx - half) + 0.5 * s - 0.5], [0, s, -s * (cy - half) + 0.5 * s - 0.5]])
        frames.append(cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
        b = ASTRONAUT_FACE_BOX
        boxes.append([s * (b[0] - (cx - half)), s * (b[1] - (cy - half)), s * (b[2] - (cx - half)),
                      s * (b[3] - (cy - half))])
    return np.stack(frames), np.array(boxes)

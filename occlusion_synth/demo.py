"""A demo / test sequence from a real photo that ships with scikit-image (public domain astronaut portrait)."""

from __future__ import annotations

import cv2
import numpy as np

# Face box (xyxy, pixels) of `skimage.data.astronaut()` (512x512): cheeks to cheeks, hairline to chin.
ASTRONAUT_FACE_BOX = np.array([174.0, 64.0, 264.0, 168.0])
_CROP = np.array([69.0, 0.0, 369.0, 300.0])  # 300x300 window around the face (head, collar, background)
#: The astronaut's 68 landmarks (iBUG order, px of the 512x512 image, rounded): MediaPipe FaceMesh's points
#: (`get_detector("mediapipe")`) mapped by `avface.landmarks.mapping.mediapipe_to_ibug68`.
ASTRONAUT_LANDMARKS68 = np.array([
    (180, 101), (179, 113), (180, 125), (181, 137), (185, 149), (192, 159), (200, 167), (210, 174), (221, 177),
    (233, 176), (244, 170), (253, 162), (261, 153), (266, 142), (269, 131), (270, 119), (271, 107), (188, 91),
    (192, 88), (199, 87), (207, 88), (216, 90), (236, 92), (245, 91), (253, 91), (259, 93), (263, 96), (225, 100),
    (224, 110), (224, 120), (224, 126), (210, 128), (217, 131), (223, 132), (230, 132), (238, 130), (195, 101),
    (199, 98), (206, 98), (213, 104), (207, 104), (200, 104), (237, 105), (245, 100), (252, 101), (256, 104),
    (250, 107), (243, 106), (202, 139), (211, 139), (217, 139), (224, 140), (230, 140), (236, 140), (245, 141),
    (239, 149), (229, 154), (223, 155), (216, 154), (207, 147), (203, 140), (218, 142), (223, 143), (229, 143),
    (243, 141), (229, 150), (223, 150), (217, 149)], np.float64)


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


def astronaut_on_backdrop(num_frames: int = 4, size: int = 224, backdrop: tuple[int, int, int] = (225, 25, 30)
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head in front of a flat, strongly coloured backdrop (a red stage by default): everything
    but the face (its landmark hull grown by 6 % of its width) and the head above it (an ellipse over the
    brows: forehead and hair) is `backdrop`. Returns static frames (T, size, size, 3) uint8 of a 170 px window
    around the head and their landmarks (T, 68, 2) px."""
    from skimage.data import astronaut

    img = astronaut().astype(np.float32)
    lm = ASTRONAUT_LANDMARKS68
    width = float(np.ptp(lm[:, 0]))
    head = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(head, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
    head = cv2.dilate(head, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.12 * width) | 1,) * 2))
    top = (int(lm[:, 0].mean()), int(lm[17:27, 1].mean()))
    cv2.ellipse(head, top, (int(0.62 * width), int(0.6 * width)), 0, 180, 360, 1, -1)
    alpha = cv2.GaussianBlur(head.astype(np.float32), (0, 0), 1.0)[..., None]
    img = alpha * img + (1 - alpha) * np.asarray(backdrop, np.float32)
    x0, y0, x1 = 140.0, 30.0, 310.0  # a 170 px square
    s = size / (x1 - x0)
    M = np.array([[s, 0, -s * x0 + 0.5 * s - 0.5], [0, s, -s * y0 + 0.5 * s - 0.5]])
    frame = cv2.warpAffine(np.clip(np.rint(img), 0, 255).astype(np.uint8), M, (size, size), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REFLECT)
    lm_px = (lm + 0.5) * s - np.array([s * x0, s * y0]) - 0.5
    return np.repeat(frame[None], num_frames, 0), np.repeat(lm_px[None], num_frames, 0)

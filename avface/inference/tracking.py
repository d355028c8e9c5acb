"""Face track of a video: which face, where, smoothed; frames without a face are interpolated and flagged.

Input: per model frame the landmark detector's result (iBUG-68 pixels of the upright frame, found flag); the
project's detector (MediaPipe FaceMesh, :func:`avface.landmarks.get_detector`) follows one face per frame.

Several faces: the detector may jump between people (e.g. when the tracked face leaves or is occluded). Detections
are linked into tracks by overlap with the track's last box (IoU >= ``link_iou`` within ``max_gap`` frames);
the reconstruction follows the **largest tracked face**: the track with the largest sum of box areas over its
frames (big and long-lived wins). Detections of other tracks are dropped (their frames count as "no face").

Boxes are preprocessing's (:func:`avface.utils.boxes.boxes_from_landmarks`: square, centred on the landmark
extent, side ``scale`` x extent); frames without a face get the box linearly interpolated between the nearest
frames with one (held at the ends), then centres and sides are smoothed with a centred moving average of
``smooth`` frames so the crop does not jitter. No face in any frame -> :class:`NoFaceError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avface.utils.boxes import boxes_from_landmarks


class NoFaceError(ValueError):
    """No face was found in any frame of a video; the message names the file."""


@dataclass
class FaceTrack:
    """Per model frame: ``boxes (M, 4)`` smoothed square crop boxes ``(x0, y0, x1, y1)`` px of the upright frame,
    ``detected (M,)`` True where the tracked face was detected, ``landmarks (M, 68, 2)`` px (zeros where not);
    for a landmark-input model also the detector's full point set ``points (M, P, 3)`` px of the upright frame
    (zeros where not detected) and its name ``point_set`` (None: not collected)."""

    boxes: np.ndarray
    detected: np.ndarray
    landmarks: np.ndarray
    points: np.ndarray | None = None
    point_set: str | None = None

    def crop_points(self, first: int, count: int, image_size: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The points of model frames ``[first, first + count)`` in their crops' pixels at ``image_size`` (the
        crop of :func:`avface.landmarks.crop.crop_resize`, depth scaled like x): ``((K, P, 3) f32, valid (K,))``;
        None without points."""
        if self.points is None:
            return None
        sl = slice(first, first + count)
        box, pts, ok = self.boxes[sl].astype(np.float32), self.points[sl].astype(np.float32), self.detected[sl]
        k = image_size / np.maximum(box[:, 2] - box[:, 0], 1e-6)
        out = np.concatenate([(pts[..., :2] - box[:, None, :2]) * k[:, None, None], pts[..., 2:] * k[:, None, None]],
                             -1)
        return np.where(ok[:, None, None], out, 0.0).astype(np.float32), ok.copy()

    @property
    def interpolated(self) -> np.ndarray:
        """(M,) True where the box was interpolated (no face detected)."""
        return ~self.detected


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_tracks(raw_boxes: np.ndarray, found: np.ndarray, link_iou: float = 0.3, max_gap: int = 25) -> np.ndarray:
    """Track id per frame (-1 where nothing was found): each detection joins the track whose last box (seen within
    ``max_gap`` frames) overlaps it most with IoU >= ``link_iou``, else starts a new track. ``raw_boxes (M, 4)``."""
    ids = np.full(len(found), -1, np.int64)
    last: list[tuple[int, np.ndarray]] = []  # per track: (frame, box)
    for i in np.flatnonzero(found):
        best, best_iou = -1, link_iou
        for k, (f, box) in enumerate(last):
            if i - f <= max_gap:
                iou = _iou(raw_boxes[i], box)
                if iou >= best_iou:
                    best, best_iou = k, iou
        if best < 0:
            last.append((int(i), raw_boxes[i]))
            best = len(last) - 1
        else:
            last[best] = (int(i), raw_boxes[i])
        ids[i] = best
    return ids


def largest_track(raw_boxes: np.ndarray, ids: np.ndarray) -> int:
    """The track with the largest sum of box areas (-1 when there is none)."""
    if not np.any(ids >= 0):
        return -1
    side = raw_boxes[:, 2] - raw_boxes[:, 0]
    area = np.bincount(ids[ids >= 0], weights=side[ids >= 0] ** 2)
    return int(np.argmax(area))


def _interpolate(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values (M, C)`` over the frames where ``valid``; held constant at the ends."""
    idx = np.flatnonzero(valid)
    x = np.arange(len(values))
    return np.stack([np.interp(x, idx, values[idx, j]) for j in range(values.shape[1])], 1)


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(x) <= 1:
        return x
    pad = k // 2
    kern = np.ones(k) / k
    return np.stack([np.convolve(np.pad(x[:, j], pad, mode="edge"), kern, mode="valid")[:len(x)]
                     for j in range(x.shape[1])], 1)


def track_face(landmarks: np.ndarray, found: np.ndarray, image_hw: tuple[int, int], scale: float = 1.6,
               smooth: int = 5, link_iou: float = 0.3, max_gap: int = 25, source: str = "video") -> FaceTrack:
    """The face track of one video (see the module docstring). ``landmarks (M, 68, 2)`` px, ``found (M,)``."""
    landmarks = np.asarray(landmarks, np.float32)
    found = np.asarray(found, bool).copy()
    if not found.any():
        raise NoFaceError(f"{source}: no face found in any of its {len(found)} frames (landmark detector: "
                          "MediaPipe FaceMesh); is a face visible, upright and large enough?")
    raw = boxes_from_landmarks(landmarks, found, scale, image_hw, smooth=1)
    ids = link_tracks(raw, found, link_iou, max_gap)
    keep = largest_track(raw, ids)
    found &= ids == keep
    centre = (raw[:, :2] + raw[:, 2:]) / 2
    side = raw[:, 2:3] - raw[:, 0:1]
    cs = _smooth(_interpolate(np.concatenate([centre, side], 1), found), smooth)
    boxes = np.concatenate([cs[:, :2] - cs[:, 2:] / 2, cs[:, :2] + cs[:, 2:] / 2], 1).astype(np.float32)
    lm = np.where(found[:, None, None], landmarks, 0.0).astype(np.float32)
    return FaceTrack(boxes, found, lm)

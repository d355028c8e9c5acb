"""MediaPipe FaceMesh in this process, for environments where mediapipe imports next to the main packages (it pins
numpy<2; the usual route is the side venv worker, :mod:`avface.landmarks.mediapipe_process`)."""

from __future__ import annotations

import numpy as np

from avface.landmarks._mediapipe_worker import N_POINTS, FaceMeshTracker
from avface.landmarks.detector import DetectedPoints, LandmarkDetector
from avface.landmarks.mapping import mediapipe_detection


class MediaPipeDetector(LandmarkDetector):  # pragma: no cover - mediapipe is optional, not installed in CI
    """MediaPipe 0.10.21 FaceMesh (``mp.solutions.face_mesh``; models ship in the wheel, offline) in video mode, with
    the worker's fallback for small faces (:class:`avface.landmarks._mediapipe_worker.FaceMeshTracker`)."""

    name = "mediapipe"
    point_set = "mediapipe478"

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        import mediapipe as mp  # noqa: F401

        self._options = {"min_detection_confidence": min_detection_confidence,
                         "min_tracking_confidence": min_tracking_confidence, "static_image_mode": False}
        self._tracker = None
        self.reset()

    def reset(self) -> None:
        self.close()
        self._tracker = FaceMeshTracker(self._options)

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    def detect_points(self, frames: np.ndarray) -> DetectedPoints:
        t, h, w, _ = frames.shape
        raw = np.zeros((t, N_POINTS, 3), np.float32)
        valid = np.zeros((t,), bool)
        for i in range(t):
            pts = self._tracker.process(np.ascontiguousarray(frames[i]))
            if pts is not None:
                raw[i], valid[i] = pts, True
        return mediapipe_detection(raw, valid, (h, w))

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.detect_points(frames)
        return d.landmarks, d.valid

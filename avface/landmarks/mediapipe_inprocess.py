"""MediaPipe FaceMesh in this process, for environments where mediapipe imports next to the main packages (it pins
numpy<2; the usual route is the side venv worker, :mod:`avface.landmarks.mediapipe_process`)."""

from __future__ import annotations

import numpy as np

from avface.landmarks.detector import DetectedPoints, LandmarkDetector
from avface.landmarks.mapping import mediapipe_detection


class MediaPipeDetector(LandmarkDetector):  # pragma: no cover - mediapipe is optional, not installed in CI
    """MediaPipe 0.10.21 FaceMesh (``mp.solutions.face_mesh``; models ship in the wheel, offline) in video mode."""

    name = "mediapipe"
    point_set = "mediapipe478"

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        import mediapipe as mp  # noqa: F401

        self._kw = dict(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                        min_detection_confidence=min_detection_confidence,
                        min_tracking_confidence=min_tracking_confidence)
        self._mesh = None
        self.reset()

    def reset(self) -> None:
        import mediapipe as mp

        self.close()
        self._mesh = mp.solutions.face_mesh.FaceMesh(**self._kw)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def detect_points(self, frames: np.ndarray) -> DetectedPoints:
        t, h, w, _ = frames.shape
        raw = np.zeros((t, 478, 3), np.float32)
        valid = np.zeros((t,), bool)
        for i in range(t):
            res = self._mesh.process(np.ascontiguousarray(frames[i]))
            if not res.multi_face_landmarks:
                continue
            pts = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark], np.float32)[:478]
            raw[i, :len(pts)] = pts
            valid[i] = True
        return mediapipe_detection(raw, valid, (h, w))

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.detect_points(frames)
        return d.landmarks, d.valid

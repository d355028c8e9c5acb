"""Landmark detectors: ``detector(frames (T,H,W,3) u8 RGB) -> (landmarks (T,68,2) f32 px, valid (T,) bool)``.

A detector keeps tracking state between calls (one detector per clip, frames fed in order); call
:meth:`LandmarkDetector.reset` between clips. Frames with no face get ``valid = False`` and zero landmarks: they
are marked, never dropped.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from avface.landmarks.mapping import mediapipe_to_ibug68


class LandmarkDetector:
    name = "base"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullDetector(LandmarkDetector):
    """No detector available: every frame is marked invalid."""

    name = "none"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = len(frames)
        return np.zeros((t, 68, 2), np.float32), np.zeros((t,), bool)


def mediapipe_available() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


class MediaPipeDetector(LandmarkDetector):  # pragma: no cover - mediapipe is optional, not installed in CI
    """MediaPipe 0.10.21 FaceMesh (``mp.solutions.face_mesh``; models ship in the wheel, offline) in video mode."""

    name = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        import mediapipe as mp  # noqa: F401

        self._kw = dict(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
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

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t, h, w, _ = frames.shape
        lm = np.zeros((t, 68, 2), np.float32)
        valid = np.zeros((t,), bool)
        for i in range(t):
            res = self._mesh.process(np.ascontiguousarray(frames[i]))
            if not res.multi_face_landmarks:
                continue
            pts = np.array([(p.x, p.y) for p in res.multi_face_landmarks[0].landmark], np.float32)
            # MediaPipe gives normalised [0, 1] image coordinates; pixel coords: u = x * W (pixel centre c + 0.5)
            lm[i] = mediapipe_to_ibug68(pts) * np.array([w, h], np.float32)
            valid[i] = True
        return lm, valid


def get_detector(name: str = "auto", min_detection_confidence: float = 0.5) -> LandmarkDetector:
    """``auto`` (MediaPipe if importable else :class:`NullDetector`), ``mediapipe`` (required) or ``none``."""
    if name == "none":
        return NullDetector()
    if name in ("auto", "mediapipe"):
        if mediapipe_available():
            return MediaPipeDetector(min_detection_confidence)
        if name == "mediapipe":
            raise ImportError(
                "landmarks.detector=mediapipe needs mediapipe==0.10.21 (optional; it pins numpy<2, so install it in "
                "a separate environment: pip install 'avface[mediapipe]'), or use landmarks.detector=auto|none"
            )
        return NullDetector()
    raise ValueError(f"unknown landmark detector {name!r} (auto | mediapipe | none)")

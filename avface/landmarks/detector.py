"""Landmark detectors: ``detector(frames (T,H,W,3) u8 RGB) -> (landmarks (T,68,2) f32 px, valid (T,) bool)``.

A detector keeps tracking state between calls (one detector per clip, frames fed in order); call
:meth:`LandmarkDetector.reset` between clips. Frames with no face get ``valid = False`` and zero landmarks: they
are marked, never dropped.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from avface.landmarks.mapping import mediapipe_to_ibug68

log = logging.getLogger(__name__)
_warned_no_mediapipe = False  # warn once per process (one detector per Ray task)


class LandmarkDetector:
    name = "base"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullDetector(LandmarkDetector):
    """No detector available: every frame is marked invalid."""

    name = "none"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = len(frames)
        return np.zeros((t, 68, 2), np.float32), np.zeros((t,), bool)


def mediapipe_importable() -> bool:
    """mediapipe can be imported in this process (never next to numpy 2; kept for environments that pin numpy<2)."""
    return importlib.util.find_spec("mediapipe") is not None


def mediapipe_available(mediapipe_python: str | None = None) -> bool:
    """A MediaPipe detector can be made: importable here, or a side venv python is found
    (:func:`avface.landmarks.mediapipe_process.resolve_mediapipe_python`)."""
    from avface.landmarks.mediapipe_process import resolve_mediapipe_python

    return mediapipe_importable() or resolve_mediapipe_python(mediapipe_python) is not None


class MediaPipeDetector(LandmarkDetector):  # pragma: no cover - mediapipe is optional, not installed in CI
    """MediaPipe 0.10.21 FaceMesh (``mp.solutions.face_mesh``; models ship in the wheel, offline) in video mode."""

    name = "mediapipe"

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


def get_detector(name: str = "auto", min_detection_confidence: float = 0.5,
                 mediapipe_python: str | None = None) -> LandmarkDetector:
    """``auto``: MediaPipe in this process if importable, else in a worker running the side venv's python
    (``mediapipe_python`` / ``$AVFACE_MEDIAPIPE_PYTHON`` / ``<repo>/.venv-mediapipe``), else :class:`NullDetector`
    with a warning; ``mediapipe``: the same without the fallback (error naming what is missing); ``none``."""
    if name == "none":
        return NullDetector()
    if name not in ("auto", "mediapipe"):
        raise ValueError(f"unknown landmark detector {name!r} (auto | mediapipe | none)")
    if mediapipe_importable():
        return MediaPipeDetector(min_detection_confidence)
    from avface.landmarks.mediapipe_process import (
        DEFAULT_SIDE_VENV,
        ENABLE_HINT,
        ENV_PYTHON,
        MediaPipeProcessDetector,
        resolve_mediapipe_python,
    )

    python = resolve_mediapipe_python(mediapipe_python)
    if python is not None:
        return MediaPipeProcessDetector(python, min_detection_confidence)
    missing = (f"mediapipe is not importable here (it pins numpy<2) and there is no side environment "
               f"({DEFAULT_SIDE_VENV}/bin/python missing, landmarks.mediapipe_python and ${ENV_PYTHON} unset)")
    if name == "mediapipe":
        raise ImportError(f"landmarks.detector=mediapipe: {missing}; to enable it, {ENABLE_HINT}; "
                          "or use landmarks.detector=none")
    global _warned_no_mediapipe
    if not _warned_no_mediapipe:
        _warned_no_mediapipe = True
        log.warning("landmarks.detector=auto: %s, so every frame of clips without ground-truth landmarks is marked "
                    "invalid. To enable it, %s.", missing, ENABLE_HINT)
    return NullDetector()

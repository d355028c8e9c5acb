"""Which landmark detector a configuration gets: :func:`get_detector` (``auto`` | ``mediapipe`` | ``none``) and
:func:`shared_detector`, the one detector of this process per configuration (what preprocessing uses)."""

from __future__ import annotations

import atexit
import importlib.util
import logging
from typing import Any

from avface.landmarks import mediapipe_process
from avface.landmarks.detector import LandmarkDetector, NullDetector
from avface.landmarks.mediapipe_inprocess import MediaPipeDetector
from avface.landmarks.mediapipe_process import (
    ENABLE_HINT,
    ENV_PYTHON,
    MediaPipeProcessDetector,
    resolve_mediapipe_python,
)

__all__ = ["get_detector", "mediapipe_available", "mediapipe_importable", "shared_detector"]

log = logging.getLogger(__name__)
_warned_no_mediapipe = False  # warn once per process (one detector per Ray task)


def mediapipe_importable() -> bool:
    """mediapipe can be imported in this process (never next to numpy 2; kept for environments that pin numpy<2)."""
    return importlib.util.find_spec("mediapipe") is not None


def mediapipe_available(mediapipe_python: str | None = None) -> bool:
    """A MediaPipe detector can be made: importable here, or a side venv python is found
    (:func:`avface.landmarks.mediapipe_process.resolve_mediapipe_python`)."""
    return mediapipe_importable() or resolve_mediapipe_python(mediapipe_python) is not None


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
    python = resolve_mediapipe_python(mediapipe_python)
    if python is not None:
        return MediaPipeProcessDetector(python, min_detection_confidence)
    side_venv = mediapipe_process.DEFAULT_SIDE_VENV  # read at call time (tests point it elsewhere)
    missing = (f"mediapipe is not importable here (it pins numpy<2) and there is no side environment "
               f"({side_venv}/bin/python missing, landmarks.mediapipe_python and ${ENV_PYTHON} unset)")
    if name == "mediapipe":
        raise ImportError(f"landmarks.detector=mediapipe: {missing}; to enable it, {ENABLE_HINT}; "
                          "or use landmarks.detector=none")
    global _warned_no_mediapipe
    if not _warned_no_mediapipe:
        _warned_no_mediapipe = True
        log.warning("landmarks.detector=auto: %s, so every frame of clips without ground-truth landmarks is marked "
                    "invalid. To enable it, %s.", missing, ENABLE_HINT)
    return NullDetector()


#: Landmark detectors of this process, by configuration (see :func:`shared_detector`).
_DETECTORS: dict[tuple[Any, ...], LandmarkDetector] = {}


def shared_detector(detector: str, min_detection_confidence: float, mediapipe_python: str | None) -> LandmarkDetector:
    """The landmark detector of this process for a configuration, made once and kept until the process exits.

    Starting the MediaPipe worker costs ~0.6 s and Ray reuses its worker processes across shard tasks, so one
    detector serves every shard a process handles; callers reset its tracking state per clip.
    """
    # Keyed by the side python actually found, so a changed environment gets its own detector.
    side = None if detector == "none" else resolve_mediapipe_python(mediapipe_python)
    key = (detector, float(min_detection_confidence), mediapipe_python, side)
    if key not in _DETECTORS:
        _DETECTORS[key] = get_detector(detector, min_detection_confidence, mediapipe_python)
        atexit.register(_DETECTORS[key].close)
    return _DETECTORS[key]

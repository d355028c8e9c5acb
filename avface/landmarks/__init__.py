"""Face landmarks for clips without ground truth: detector contract, factory, MediaPipe face mesh -> iBUG-68, crop
boxes.

MediaPipe 0.10.21 pins numpy<2, so it lives in a side venv (``.venv-mediapipe``, made by ``scripts/install.sh``)
and runs in a worker process (:class:`MediaPipeProcessDetector`). :func:`get_detector` returns MediaPipe in this
process where importable, else the worker when the side venv is found, else (``name="auto"``) a
:class:`NullDetector` with a warning (every frame marked "no face").
"""

from avface.landmarks.detector import POINT_SETS, DetectedPoints, LandmarkDetector, NullDetector
from avface.landmarks.factory import get_detector, mediapipe_available, shared_detector
from avface.landmarks.mapping import MEDIAPIPE_TO_IBUG68, mediapipe_to_ibug68
from avface.landmarks.mediapipe_process import MediaPipeProcessDetector, MediaPipeWorkerError, resolve_mediapipe_python

__all__ = ["POINT_SETS", "DetectedPoints", "LandmarkDetector", "NullDetector", "get_detector", "mediapipe_available",
           "shared_detector", "MEDIAPIPE_TO_IBUG68", "mediapipe_to_ibug68", "MediaPipeProcessDetector",
           "MediaPipeWorkerError", "resolve_mediapipe_python"]

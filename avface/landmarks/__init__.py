"""Face landmarks for clips without ground truth: detector interface, MediaPipe face mesh -> iBUG-68, crop boxes.

MediaPipe 0.10.21 is optional (it pins numpy<2): :func:`get_detector` returns the MediaPipe detector where it is
importable and, with ``name="auto"``, a :class:`NullDetector` otherwise (every frame marked "no face").
"""

from avface.landmarks.detector import LandmarkDetector, NullDetector, get_detector, mediapipe_available
from avface.landmarks.mapping import MEDIAPIPE_TO_IBUG68, mediapipe_to_ibug68

__all__ = ["LandmarkDetector", "NullDetector", "get_detector", "mediapipe_available", "MEDIAPIPE_TO_IBUG68",
           "mediapipe_to_ibug68"]

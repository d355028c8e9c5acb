"""Landmark detectors: ``detector(frames (T,H,W,3) u8 RGB) -> (landmarks (T,68,2) f32 px, valid (T,) bool)``, and
``detector.detect_points(frames) -> DetectedPoints``: the same detection with the detector's full point set
(MediaPipe: 478 points with relative depth; a 68-point detector: its 68 points, depth 0), the model's landmark
input (``AVFaceConfig.landmark_input``). ``__call__`` stays the 68-point contract its users rely on.

A detector keeps tracking state between calls (one detector per clip, frames fed in order); call
:meth:`LandmarkDetector.reset` between clips. Frames with no face get ``valid = False`` and zero landmarks: they
are marked, never dropped. Which detector a configuration gets: :mod:`avface.landmarks.factory`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the point sets a detector can return, by name: number of points (their order is the detector's own)
POINT_SETS: dict[str, int] = {"mediapipe478": 478, "mediapipe468": 468, "ibug68": 68}


@dataclass
class DetectedPoints:
    """One detection call's result: ``landmarks (T,68,2)`` f32 px (iBUG-68, as ``__call__`` returns them),
    ``valid (T,)`` bool, ``points (T,P,3)`` f32 the full point set (x, y px; z relative depth in the same pixel
    units, larger = farther from the camera as MediaPipe gives it; 0 for 2D detectors), zeros where not valid, and
    ``point_set`` its name (a key of :data:`POINT_SETS`)."""

    landmarks: np.ndarray
    valid: np.ndarray
    points: np.ndarray
    point_set: str


def ibug68_points(landmarks: np.ndarray, valid: np.ndarray) -> DetectedPoints:
    """A 68-point detection as :class:`DetectedPoints` (depth 0)."""
    lm = np.asarray(landmarks, np.float32)
    pts = np.concatenate([lm, np.zeros((*lm.shape[:-1], 1), np.float32)], -1)
    return DetectedPoints(lm, np.asarray(valid, bool), pts, "ibug68")


class LandmarkDetector:
    """The detector contract (see the module docstring); ``name`` is recorded as the samples' landmark source."""

    name = "base"
    #: the point set :meth:`detect_points` returns (a key of :data:`POINT_SETS`)
    point_set = "ibug68"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def detect_points(self, frames: np.ndarray) -> DetectedPoints:
        """The detection with the full point set (see :class:`DetectedPoints`); a 68-point detector: its 68 points."""
        return ibug68_points(*self(frames))

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
    point_set = "none"  # no points at all: preprocessing stores no detector points

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = len(frames)
        return np.zeros((t, 68, 2), np.float32), np.zeros((t,), bool)

    def detect_points(self, frames: np.ndarray) -> DetectedPoints:
        t = len(frames)
        lm, valid = self(frames)
        return DetectedPoints(lm, valid, np.zeros((t, 0, 3), np.float32), self.point_set)

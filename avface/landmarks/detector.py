"""Landmark detectors: ``detector(frames (T,H,W,3) u8 RGB) -> (landmarks (T,68,2) f32 px, valid (T,) bool)``.

A detector keeps tracking state between calls (one detector per clip, frames fed in order); call
:meth:`LandmarkDetector.reset` between clips. Frames with no face get ``valid = False`` and zero landmarks: they
are marked, never dropped. Which detector a configuration gets: :mod:`avface.landmarks.factory`.
"""

from __future__ import annotations

import numpy as np


class LandmarkDetector:
    """The detector contract (see the module docstring); ``name`` is recorded as the samples' landmark source."""

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

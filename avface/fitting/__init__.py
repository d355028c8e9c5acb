"""The face model fitted to 2D landmarks (:mod:`avface.fitting.landmarks`): the test-time fit of reconstruction and
the pseudo-ground truth of preprocessing."""

from avface.fitting.landmarks import (
    FitParams,
    FitResult,
    LandmarkRig,
    RefineConfig,
    fit_landmarks,
    landmark_rig,
    rig_landmarks,
)

__all__ = ["FitParams", "FitResult", "LandmarkRig", "RefineConfig", "fit_landmarks", "landmark_rig", "rig_landmarks"]

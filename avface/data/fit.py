"""Pseudo-ground truth of a window (preprocessing's ``fit.enabled``): the face model fitted to its landmarks.

A corpus of real talking faces (VoxCeleb2) has no 3D parameters, and without DECA's weights the ``pretrain`` stage
has nothing to regress. The test-time fit of reconstruction (:mod:`avface.fitting.landmarks`), started from the
mean face instead of a network (the closed-form weak-perspective pose and camera of the mean face, then L-BFGS over
pose, camera, expression, jaw and the window's shape offset, the priors towards the mean face), gives each frame
parameters that reproduce its landmarks; ``pretrain`` with ``target=fitted`` regresses those.

Each window is one sequence of the fit (its own shape offset and smoothness term), fitted in the stored frames'
NDC (the frame the exact ground truth's camera is expressed in). Frames without valid landmarks are not fitted
(``fit_valid`` False: never supervised). The quality of each frame's fit is its landmark residual, the NME of the
fitted 68 points against the targets (a fraction of the inter-ocular distance, ``fit_residual``), so that
training can leave out bad fits (``StageConfig.fit_max_residual``).

Torch and the face model are imported only by preprocessing runs with ``fit.enabled`` (the module is imported
lazily by :mod:`avface.data.clip`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avface.data.config import FitConfig
from avface.face_model import FaceModel, load_face_model
from avface.fitting.landmarks import FitParams, LandmarkRig, RefineConfig, fit_landmarks, landmark_rig
from avface.metrics.landmarks import landmark_nme
from avface.render.cameras import ndc_to_pixels, pixels_to_ndc

__all__ = ["FIT_PARAMS", "WindowFit", "LandmarkFitter", "pack_fit_params"]

#: the parameter groups of ``fit_params.npy``, in column order (per frame)
FIT_PARAMS = ("shape", "expression", "jaw", "global_pose", "cam")


@dataclass
class WindowFit:
    """One window's pseudo-ground truth: ``params`` name -> ``(T, k)`` f32 (:data:`FIT_PARAMS`; ``cam`` in the stored
    frames' NDC), ``valid (T,)`` bool (fitted frames), ``residual (T,)`` f32 NME of the fitted landmarks (NaN where
    not fitted)."""

    params: dict[str, np.ndarray]
    valid: np.ndarray
    residual: np.ndarray

    def summary(self) -> dict[str, Any]:
        """``meta.fit``: the window's mean residual over fitted frames (None: none fitted) and their count."""
        r = self.residual[self.valid]
        return {"residual": float(np.mean(r)) if len(r) else None, "frames": int(self.valid.sum())}


def pack_fit_params(params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, list[int]]]:
    """``(T, D)`` f32 and the column layout (name -> [start, stop]) of :data:`FIT_PARAMS` (all required)."""
    missing = [k for k in FIT_PARAMS if k not in params]
    if missing:
        raise KeyError(f"fitted parameters lack {missing} (have {sorted(params)})")
    cols, layout, at = [], {}, 0
    for name in FIT_PARAMS:
        a = np.asarray(params[name], np.float32)
        cols.append(a.reshape(a.shape[0], -1))
        layout[name] = [at, at + cols[-1].shape[1]]
        at += cols[-1].shape[1]
    return np.concatenate(cols, axis=1), layout


class LandmarkFitter:
    """The face model and its landmark rig, built once per preprocessing task; ``fitter(landmarks, valid, size)``
    fits one window."""

    def __init__(self, config: FitConfig):
        kwargs = {"landmark_embedding": config.landmark_embedding} if config.landmark_embedding else {}
        self.face_model = FaceModel(load_face_model(config.face_model, **kwargs)).eval()
        self.rig: LandmarkRig = landmark_rig(self.face_model)
        self.refine = RefineConfig(iterations=config.iterations, max_eval=config.max_eval, sigma=config.sigma,
                                   w_expression=config.w_expression, w_jaw=config.w_jaw, w_shape=config.w_shape,
                                   w_smooth=config.w_smooth)
        with torch.no_grad():
            lm3 = self.face_model(shape=torch.zeros(1, 1), expression=torch.zeros(1, 1),
                                  global_pose=torch.zeros(1, 3)).landmarks68[0]
        self._mean_iod = float((lm3[36, :2] - lm3[45, :2]).norm())  # metres: the camera scale's first guess

    def mean_face(self, target: torch.Tensor) -> FitParams:
        """The start ``(1, T, k)``: zero shape, expression, jaw and pose; the camera scale from the targets' median
        inter-ocular distance (NDC), centred (the closed-form start replaces both where it fits better)."""
        t = target.shape[1]
        iod = (target[0, :, 36] - target[0, :, 45]).norm(dim=-1)
        s = float(iod.median()) / self._mean_iod if torch.isfinite(iod).all() and iod.median() > 0 else 5.0
        fm = self.face_model

        def zeros(k: int) -> torch.Tensor:
            return torch.zeros(1, t, k)

        cam = torch.tensor([s, 0.0, 0.0]).expand(1, t, 3).clone()
        return FitParams(zeros(fm.n_shape), zeros(fm.n_expression), zeros(3), zeros(3), cam)

    def __call__(self, landmarks: np.ndarray, valid: np.ndarray, size: int) -> WindowFit:
        """``landmarks (T, 68, 2)`` pixels of the stored ``size`` x ``size`` frames, ``valid (T,)`` -> the window's
        :class:`WindowFit`."""
        valid = np.asarray(valid, bool) & np.all(np.isfinite(landmarks), axis=(1, 2))
        target = pixels_to_ndc(torch.as_tensor(np.where(valid[:, None, None], landmarks, 0.0), dtype=torch.float32),
                               size)[None]
        t = target.shape[1]
        if not valid.any():
            params = {k: v[0].numpy() for k, v in vars(self.mean_face(target)).items()}
            return WindowFit(params, np.zeros(t, bool), np.full(t, np.nan, np.float32))
        start = self.mean_face(torch.where(torch.as_tensor(valid)[None, :, None, None], target,
                                           target[:, valid].mean(1, keepdim=True)))
        res = fit_landmarks(self.rig, start, target, torch.as_tensor(valid)[None], self.refine)
        ok = res.refined[0].numpy()
        pred = ndc_to_pixels(res.landmarks2d[0], size).numpy().astype(np.float64)
        residual = np.full(t, np.nan, np.float32)
        if ok.any():
            residual[ok] = landmark_nme(pred[ok], np.asarray(landmarks, np.float64)[ok]).astype(np.float32)
        params = {k: getattr(res.params, k)[0].numpy().astype(np.float32) for k in FIT_PARAMS}
        return WindowFit(params, ok, residual)

"""Test-time fitting (``avface reconstruct --refine landmarks``): the network's per-frame prediction fitted to the
tracked 2D landmarks.

On faces unlike its training data the network's pose and camera come out coarse and its mouth lags the speech. The
fit (:mod:`avface.fitting.landmarks`, where its objective is stated; preprocessing fits pseudo-ground truth with it
too) keeps what the network is good at (a prior holds expression, jaw and shape near its values, and frames without
a detected face keep them) and takes what the detector sees. :func:`refine_store` is the reconstruction's hook
(per-model-frame arrays, the face track's landmarks in frame pixels, crop boxes).
"""

from __future__ import annotations

import numpy as np
import torch

# the fit itself lives below the training/inference layer (preprocessing fits pseudo-ground truth with it too)
from avface.fitting.landmarks import (
    FitParams,
    LandmarkRig,
    RefineConfig,
    fit_landmarks,
    landmark_rig,
    lip_landmark_offsets,
    pixels_to_crop_ndc,
)

__all__ = ["REFINE_MODES", "refine_store"]

#: ``--refine`` choices: ``landmarks`` fits to the tracked landmarks, ``none`` is the network alone (the paper)
REFINE_MODES: tuple[str, ...] = ("landmarks", "none")


# ------------------------------------------------------------------------------------------------ reconstruction
#: the per-model-frame arrays of the reconstruction that the fit replaces (store key -> FitParams field)
STORE_KEYS = {"shape": "shape", "expression": "expression", "jaw": "jaw", "global_pose": "global_pose", "cam": "cam"}


def refine_store(store: dict[str, np.ndarray], landmarks: np.ndarray, detected: np.ndarray, boxes: np.ndarray,
                 face_model: torch.nn.Module, chunk: int = 256, config: RefineConfig | None = None,
                 lip_ids: torch.Tensor | None = None, rig: LandmarkRig | None = None, overlap: int = 8) -> np.ndarray:
    """Refine the reconstruction's per-model-frame arrays in place, ``chunk`` consecutive frames at a time (memory
    bounded by the chunk): ``store`` holds ``shape``, ``expression``, ``jaw``, ``global_pose``, ``cam`` (crop NDC)
    and optionally ``lip_offsets (M, K, 3)`` at ``lip_ids``; ``landmarks (M, 68, 2)`` the face track's frame pixels,
    ``detected (M,)``, ``boxes (M, 4)`` the crop boxes. Each chunk is fitted with the last ``overlap`` frames of the
    previous one in front (already fitted: they start, and are held by the priors, at their fitted values), so that
    the smoothness term reaches across the chunk boundary; only the chunk's own frames are written. Returns
    ``refined (M,)`` bool."""
    dev = face_model.v_template.device
    rig = rig or landmark_rig(face_model)
    m = len(detected)
    refined = np.zeros(m, bool)
    step = max(1, chunk)
    for a in range(0, m, step):
        b = min(m, a + step)
        if not np.asarray(detected[a:b], bool).any():
            continue
        lo = a - min(max(0, overlap), a)  # context frames [lo, a)
        c = a - lo

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=dev)[None]

        init = FitParams(**{f: t(store[k][lo:b]) for k, f in STORE_KEYS.items()})
        offsets = None
        if "lip_offsets" in store and lip_ids is not None:
            offsets = lip_landmark_offsets(face_model, t(store["lip_offsets"][lo:b])[0], lip_ids.to(dev))[None]
        target = t(pixels_to_crop_ndc(landmarks[lo:b].astype(np.float64), boxes[lo:b].astype(np.float64)))
        det = torch.as_tensor(np.asarray(detected[lo:b], bool), device=dev)[None]
        res = fit_landmarks(rig, init, target, det, config, offsets)
        for k, f in STORE_KEYS.items():
            store[k][a:b] = getattr(res.params, f)[0, c:].cpu().numpy().astype(store[k].dtype)
        refined[a:b] = res.refined[0, c:].cpu().numpy()
    return refined

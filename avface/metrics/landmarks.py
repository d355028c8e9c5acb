"""2D landmark metrics as the paper's Table 4 reports them: NME, CED curve, AUC, failure rate, lip and occluded NME.

Conventions: 68 iBUG points; NME of one sample = mean over points of ||p - g|| / d with
d = the inter-ocular distance ||g36 - g45|| (outer eye corners, HRNet's evaluation) or sqrt(w h) of the
ground-truth landmark box (3DDFA's AFLW2000-3D protocol). NME is a fraction here; tables print it in percent.
AUC_a = integral of the CED curve on [0, a] divided by a; failure rate = share of samples with NME > a.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.integrate import simpson

__all__ = ["OUTER_EYE_CORNERS", "LIP_POINTS", "Normalization", "nme_normalizer", "landmark_nme", "lip_nme",
           "occluded_nme", "ced_curve", "auc", "failure_rate"]

OUTER_EYE_CORNERS: tuple[int, int] = (36, 45)
LIP_POINTS: np.ndarray = np.arange(48, 68)  # outer + inner lip contour of the 68-point scheme

Normalization = Literal["inter_ocular", "box"]


def nme_normalizer(gt: np.ndarray, normalization: Normalization = "inter_ocular") -> np.ndarray:
    """Per-sample normalising distance. gt: (N, 68, 2) -> (N,).

    ``inter_ocular``: ||gt[:, 36] - gt[:, 45]||; ``box``: sqrt(w * h) of the box around all of gt's points.
    """
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[-1] not in (2, 3):
        raise ValueError(f"gt must be (N, K, 2|3), got {gt.shape}")
    if normalization == "inter_ocular":
        if gt.shape[1] != 68:
            raise ValueError(f"inter-ocular normalisation needs the 68-point scheme, got {gt.shape[1]} points")
        d = np.linalg.norm(gt[:, OUTER_EYE_CORNERS[0]] - gt[:, OUTER_EYE_CORNERS[1]], axis=-1)
    elif normalization == "box":
        wh = gt[..., :2].max(axis=1) - gt[..., :2].min(axis=1)  # (N, 2)
        d = np.sqrt(wh[:, 0] * wh[:, 1])
    else:
        raise ValueError(f"normalization must be 'inter_ocular' or 'box', got {normalization!r}")
    if np.any(d <= 0):
        raise ValueError(f"degenerate ground truth: normalising distance 0 for samples {np.nonzero(d <= 0)[0][:10]}")
    return d


def landmark_nme(pred: np.ndarray, gt: np.ndarray, normalization: Normalization = "inter_ocular",
                 point_ids: np.ndarray | None = None, visible: np.ndarray | None = None) -> np.ndarray:
    """Per-sample NME. pred, gt: (N, 68, 2) -> (N,) (a fraction of the normalising distance).

    The normaliser always comes from all 68 ground-truth points; ``point_ids`` (K,) restricts the mean to a subset
    (lips: :data:`LIP_POINTS`); ``visible`` (N, 68) bool leaves out points without ground truth (a sample with no
    visible point gets NaN).
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    d = nme_normalizer(gt, normalization)
    err = np.linalg.norm(pred - gt, axis=-1)  # (N, 68)
    w = np.ones_like(err) if visible is None else np.asarray(visible, dtype=np.float64)
    if point_ids is not None:
        err, w = err[:, point_ids], w[:, point_ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (err * w).sum(1) / w.sum(1) / d


def lip_nme(pred: np.ndarray, gt: np.ndarray, normalization: Normalization = "inter_ocular",
            visible: np.ndarray | None = None) -> np.ndarray:
    """Per-sample NME over the 20 lip points 48-67 (normalised like the full NME). (N, 68, 2) -> (N,)."""
    return landmark_nme(pred, gt, normalization, point_ids=LIP_POINTS, visible=visible)


def occluded_nme(pred: np.ndarray, gt: np.ndarray, occluded: np.ndarray,
                 normalization: Normalization = "inter_ocular") -> np.ndarray:
    """NME of the occluded samples only. pred, gt: (N, 68, 2); occluded: (N,) bool (a frame of an occluded window,
    or a frame whose occlusion mask covers the face) -> (M,) with M = occluded.sum()."""
    occluded = np.asarray(occluded, dtype=bool)
    if occluded.shape != (len(pred),):
        raise ValueError(f"occluded must be ({len(pred)},) bool, got {occluded.shape}")
    return landmark_nme(np.asarray(pred)[occluded], np.asarray(gt)[occluded], normalization)


def ced_curve(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Cumulative error distribution: share of samples with error <= each threshold. errors: (N,), thresholds:
    (M,) -> (M,) in [0, 1]. NaN errors (no ground truth) are left out."""
    e = np.asarray(errors, dtype=np.float64)
    e = np.sort(e[np.isfinite(e)])
    if e.size == 0:
        raise ValueError("ced_curve: no finite errors")
    return np.searchsorted(e, np.asarray(thresholds, dtype=np.float64), side="right") / e.size


def auc(errors: np.ndarray, max_error: float = 0.07, steps: int = 1001) -> float:
    """Area under the CED curve on [0, max_error], divided by max_error (so in [0, 1]). errors: (N,).

    Simpson's rule (scipy.integrate.simpson) on ``steps`` evenly spaced thresholds.
    """
    if max_error <= 0:
        raise ValueError(f"max_error must be > 0, got {max_error}")
    x = np.linspace(0.0, max_error, steps)
    return float(simpson(ced_curve(errors, x), x=x) / max_error)


def failure_rate(errors: np.ndarray, threshold: float = 0.1) -> float:
    """Share of samples with error > threshold. errors: (N,) (NaNs left out)."""
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        raise ValueError("failure_rate: no finite errors")
    return float((e > threshold).mean())

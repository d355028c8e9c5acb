"""Landmark-based losses of L_coarse (DECA + EMOCA): weighted 68-point landmarks, eye closure, mouth closure,
lip corners. Pure functions over (..., 68, 2) landmark tensors in one coordinate frame (NDC in the model).

``valid`` masks (broadcastable to the leading dims, e.g. (B,T)) drop frames without ground-truth landmarks;
a mean over zero valid frames is 0 (with gradient), never NaN.
"""

from __future__ import annotations

import torch

from avface.losses.reduction import masked_mean

# DECA's weighted_landmark_loss weights (68-point iBUG order): nose, mouth, contour points near the jaw.
_LMK_WEIGHTS = torch.ones(68)
_LMK_WEIGHTS[5:7] = 2
_LMK_WEIGHTS[10:12] = 2
_LMK_WEIGHTS[27:36] = 1.5
_LMK_WEIGHTS[30] = 3
_LMK_WEIGHTS[31] = 3
_LMK_WEIGHTS[35] = 3
_LMK_WEIGHTS[60:68] = 1.5
_LMK_WEIGHTS[48:60] = 1.5
_LMK_WEIGHTS[48] = 3
_LMK_WEIGHTS[54] = 3

EYE_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))  # upper / lower eyelid
MOUTH_PAIRS = ((61, 67), (62, 66), (63, 65))  # inner upper / inner lower lip (EMOCA's lip_dis)
LIP_CORNER_PAIRS = ((48, 54), (60, 64))  # left / right corner (outer, inner) (EMOCA's mouth_corner_dis)


def landmark_weights() -> torch.Tensor:
    """(68,) DECA landmark weights."""
    return _LMK_WEIGHTS.clone()


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                  weights: torch.Tensor | None = None, confidence: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted L1 landmark loss, normalised as DECA's ``weighted_landmark_loss`` / ``batch_kp_2d_l1_loss``:

        sum_k w_k v_k |pred_k - target_k|_1 / (2 sum_k w_k v_k + 1e-8)

    with the sums over every point of every frame, w_k the per-point weights (default DECA's) and v_k the
    visibility (``valid`` frame flag x ``confidence``). A weighted mean of the per-coordinate absolute error, so
    it does not change with the batch size; 0 (not NaN) when nothing is valid.

    pred, target (..., 68, 2); valid (...) bool; weights (68,); confidence (..., 68) optional.
    """
    w = (landmark_weights() if weights is None else weights).to(pred)
    vis = w.expand(pred.shape[:-1])
    if valid is not None:
        vis = vis * valid.to(pred)[..., None]
    if confidence is not None:
        vis = vis * confidence.to(pred)
    err = (pred - target).abs().sum(-1)
    return (err * vis).sum() / (2.0 * vis.sum() + 1e-8)


def _pair_distances(lmk: torch.Tensor, pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """(..., P) Euclidean distances between landmark pairs (eps inside the sqrt keeps gradients finite)."""
    a = torch.tensor([p[0] for p in pairs], device=lmk.device)
    b = torch.tensor([p[1] for p in pairs], device=lmk.device)
    return ((lmk[..., a, :] - lmk[..., b, :]).square().sum(-1) + 1e-12).sqrt()


def relative_distance_loss(pred: torch.Tensor, target: torch.Tensor, pairs: tuple[tuple[int, int], ...],
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pairs of |d_pred - d_target|, d = ||lmk[i] - lmk[j]|| (DECA's eye loss, EMOCA's lip losses)."""
    err = (_pair_distances(pred, pairs) - _pair_distances(target, pairs)).abs().mean(-1)
    return masked_mean(err, valid)


def eye_closure_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    return relative_distance_loss(pred, target, EYE_PAIRS, valid)


def mouth_closure_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    return relative_distance_loss(pred, target, MOUTH_PAIRS, valid)


def lip_corner_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    return relative_distance_loss(pred, target, LIP_CORNER_PAIRS, valid)



def dense_landmark_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 distance per coordinate of a dense point set (the detector's 468 MediaPipe points against the starter
    model's vertices 0..467, which are those ids), over the ``valid`` frames; 0 when none is.

    pred, target (..., K, 2) NDC; valid (...) bool.
    """
    vis = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device)
    if valid is not None:
        vis = vis * valid.to(pred)[..., None]
    err = (pred - target).abs().sum(-1)
    return (err * vis).sum() / (2.0 * vis.sum() + 1e-8)

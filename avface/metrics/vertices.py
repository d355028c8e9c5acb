"""3D vertex metrics over mesh sequences with ground truth: aligned vertex error, lip vertex error, jitter.

Inputs are model-space metres by default (``scale_to_mm=1000``); pass ``scale_to_mm=1`` for millimetre inputs
(Multiface). Tensors in, tensors out (differentiable; the training uses :func:`aligned_vertex_error`); numpy in,
numpy out.
"""

from __future__ import annotations

import numpy as np
import torch

from avface.metrics.alignment import apply_similarity, similarity_procrustes

__all__ = ["aligned_vertex_distances", "aligned_vertex_error", "vertex_errors", "lip_vertex_error",
           "vertex_acceleration", "jitter"]


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, True
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), False


def _check_seq(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (T, V, 3)")


def aligned_vertex_distances(pred, gt, mask=None, *, scale_to_mm: float = 1000.0, scale: bool = True):
    """Distance of every vertex after aligning each predicted frame onto its ground truth with a similarity
    (Procrustes with scale; ``scale=False``: rigid) fit on the vertices of ``mask``. pred, gt: (T, V, 3); mask:
    (V,) or (T, V) bool/weights, None = all -> (T, V) in mm (tensor in, tensor out)."""
    p, was_tensor = _as_tensor(pred)
    g = torch.as_tensor(gt, dtype=p.dtype, device=p.device)
    _check_seq(p, g)
    w = None if mask is None else torch.as_tensor(mask, device=p.device).to(p.dtype).expand(p.shape[:2])
    sim = similarity_procrustes(p, g, w, scale=scale)
    err = torch.linalg.norm(apply_similarity(p, sim) - g, dim=-1) * scale_to_mm  # (T, V)
    return err if was_tensor else err.numpy()


def aligned_vertex_error(pred, gt, mask=None, *, scale_to_mm: float = 1000.0, scale: bool = True):
    """Per-frame mean vertex distance after aligning each predicted frame onto its ground truth with a similarity
    (Procrustes with scale; ``scale=False``: rigid). pred, gt: (T, V, 3); mask: (V,) or (T, V) bool/weights (the
    vertices that count, both for the fit and the mean), None = all -> (T,) in mm."""
    p, was_tensor = _as_tensor(pred)
    err = aligned_vertex_distances(p, gt, mask, scale_to_mm=scale_to_mm, scale=scale)  # (T, V)
    if mask is None:
        per_frame = err.mean(1)
    else:
        w = torch.as_tensor(mask, device=p.device).to(p.dtype).expand(p.shape[:2])
        per_frame = (err * w).sum(1) / w.sum(1)
    return per_frame if was_tensor else per_frame.numpy()


def vertex_errors(pred: torch.Tensor, gt: torch.Tensor, lip_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame mean distance (mm) of all vertices and of the lip vertices after the similarity that best maps
    ``pred`` onto ``gt`` over all vertices (validation's and evaluation's 3D errors; fit in float64).
    pred, gt: (N, V, 3) metres; lip_ids: (L,) vertex ids -> ((N,), (N,)) float32."""
    err = aligned_vertex_distances(pred.double(), gt.double())
    return err.mean(1).float(), err[:, lip_ids].mean(1).float()


def lip_vertex_error(pred, gt, lip_ids, *, scale_to_mm: float = 1000.0) -> float:
    """LVE (VOCA / FaceFormer): per frame the maximum over lip vertices of the squared L2 error, mean over frames.
    pred, gt: (T, V, 3); lip_ids: (L,) vertex ids -> mm^2 (no alignment: the sequences share one frame)."""
    p, _ = _as_tensor(pred)
    g = torch.as_tensor(gt, dtype=p.dtype, device=p.device)
    _check_seq(p, g)
    ids = torch.as_tensor(np.asarray(lip_ids), dtype=torch.long, device=p.device)
    sq = ((p[:, ids] - g[:, ids]) * scale_to_mm).pow(2).sum(-1)  # (T, L)
    return float(sq.max(dim=1).values.mean())


def vertex_acceleration(vertices, *, scale_to_mm: float = 1000.0):
    """Acceleration magnitude of every vertex by second differences: ||v[t+1] - 2 v[t] + v[t-1]||.
    vertices: (T, V, 3) -> (T-2, V) in mm per frame^2."""
    v, was_tensor = _as_tensor(vertices)
    if v.ndim != 3 or v.shape[-1] != 3 or v.shape[0] < 3:
        raise ValueError(f"vertices must be (T >= 3, V, 3), got {tuple(v.shape)}")
    acc = torch.linalg.norm(v[2:] - 2 * v[1:-1] + v[:-2], dim=-1) * scale_to_mm
    return acc if was_tensor else acc.numpy()


def jitter(vertices, *, scale_to_mm: float = 1000.0) -> float:
    """Temporal jitter: mean vertex acceleration magnitude (mm per frame^2). Per-frame methods flicker: their
    jitter is well above the ground truth's. vertices: (T >= 3, V, 3)."""
    return float(vertex_acceleration(vertices, scale_to_mm=scale_to_mm).mean())

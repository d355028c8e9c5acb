"""Similarity (scale + rotation + translation) Procrustes alignment, batched, in torch (differentiable).

One implementation for every caller: the 3D vertex error (metrics and training), the landmark initialisation and
the refinement steps of the NoW-style scan-to-mesh error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Similarity", "similarity_procrustes", "apply_similarity"]


@dataclass
class Similarity:
    """x -> scale * rotation @ x + translation. scale: (B,), rotation: (B, 3, 3) (det +1), translation: (B, 3)."""

    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor

    def inverse(self) -> Similarity:
        r_t = self.rotation.transpose(-1, -2)
        return Similarity(1.0 / self.scale, r_t,
                          -torch.einsum("bij,bj->bi", r_t, self.translation) / self.scale[:, None])


def apply_similarity(points: torch.Tensor, sim: Similarity) -> torch.Tensor:
    """points: (B, N, 3) -> (B, N, 3)."""
    return sim.scale[:, None, None] * torch.einsum("bij,bnj->bni", sim.rotation, points) + sim.translation[:, None]


def similarity_procrustes(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None,
                          scale: bool = True) -> Similarity:
    """The similarity that best maps src onto dst in the weighted least-squares sense (Umeyama 1991), proper
    rotations only (no reflection). src, dst: (B, N, 3); weights: (B, N) or (N,) >= 0, or None (all 1).
    ``scale=False`` fixes the scale to 1 (rigid)."""
    if src.shape != dst.shape or src.ndim != 3 or src.shape[-1] != 3:
        raise ValueError(f"src {tuple(src.shape)} and dst {tuple(dst.shape)} must both be (B, N, 3)")
    if weights is None:
        w = torch.ones(src.shape[:2], dtype=src.dtype, device=src.device)
    else:
        w = torch.as_tensor(weights, dtype=src.dtype, device=src.device).expand(src.shape[:2])
    w = w / w.sum(1, keepdim=True).clamp_min(torch.finfo(src.dtype).tiny)  # (B, N), sums to 1
    mu_s = (w[..., None] * src).sum(1)  # (B, 3)
    mu_d = (w[..., None] * dst).sum(1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = torch.einsum("bn,bni,bnj->bij", w, xd, xs)  # (B, 3, 3) = sum w dst src^T
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones_like(sig)
    diag = torch.cat([diag[:, :2], d[:, None]], dim=1)  # flip the smallest axis where a reflection would fit best
    rot = u @ torch.diag_embed(diag) @ vh
    if scale:
        var_s = (w * (xs**2).sum(-1)).sum(1)
        s = (sig * diag).sum(1) / var_s.clamp_min(torch.finfo(src.dtype).tiny)
    else:
        s = torch.ones(src.shape[0], dtype=src.dtype, device=src.device)
    t = mu_d - s[:, None] * torch.einsum("bij,bj->bi", rot, mu_s)
    return Similarity(s, rot, t)

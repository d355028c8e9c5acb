"""ID-MRF (Wang et al. 2018, as used by DECA) as a pure function over feature maps. The module that owns the VGG19
features it is computed on is :mod:`avface.models.perceptual`.
"""

from __future__ import annotations

import torch

__all__ = ["id_mrf"]


def id_mrf(gen: torch.Tensor, tar: torch.Tensor, bias: float = 1.0, sigma: float = 0.5,
           eps: float = 1e-5) -> torch.Tensor:
    """ID-MRF term between feature maps gen, tar (N,C,H,W) (patch size 1), averaged over the batch (DECA sums
    over its batch, which grows with the batch size).

    Cosine distances between every generated and target feature vector (centred on the target mean), made
    relative to the nearest one, turned into contextual similarities exp((bias - d_rel) / sigma) normalised over
    targets; the loss is -log of the mean over targets of the max similarity.
    """
    mean_t = tar.mean(dim=(0, 2, 3), keepdim=True)
    g = gen - mean_t
    t = tar - mean_t
    g = g / g.norm(dim=1, keepdim=True).clamp_min(eps)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(eps)
    n, c = g.shape[:2]
    gf = g.reshape(n, c, -1)  # (N,C,Pg)
    tf = t.reshape(n, c, -1)  # (N,C,Pt)
    cos = torch.einsum("ncp,ncq->nqp", gf, tf)  # (N, Pt, Pg): target patches as "channels"
    dist = (1.0 - cos) / 2.0
    rel = dist / (dist.min(dim=1, keepdim=True)[0] + eps)
    sim = torch.exp((bias - rel) / sigma)
    cs = sim / sim.sum(dim=1, keepdim=True)
    k_max = cs.max(dim=2)[0]  # (N, Pt): best generated match per target patch
    return (-torch.log(k_max.mean(dim=1))).mean()

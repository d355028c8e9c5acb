"""Reductions shared by the loss terms."""

from __future__ import annotations

import torch

__all__ = ["masked_mean"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is set (``mask`` broadcast to ``x``: e.g. (N,1,H,W) over
    channels, or (B,T) frame validity over per-frame terms). 0 (with gradient) for an empty mask, never NaN;
    ``mask=None``: the plain mean."""
    if mask is None:
        return x.mean()
    m = mask.to(x).expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)

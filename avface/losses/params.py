"""Supervised parameter loss: predicted face-model parameters against known ones (the synthetic corpus's exact
ground truth), each group's error measured in units of its spread over the corpus. A pure function over tensors.
"""

from __future__ import annotations

import torch

from avface.losses.reduction import masked_mean

__all__ = ["parameter_loss"]


def parameter_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                   scale: dict[str, torch.Tensor | float], weights: dict[str, float] | None = None,
                   eps: float = 1e-6, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per parameter group g: ``weights[g] * mean(((pred[g] - target[g]) / scale[g]) ** 2)``.

    Args:
        pred, target: groups by name (e.g. ``shape (B,T,NS)``, ``jaw (B,T,3)``, ``light (B,9,3)``); a group is
            scored when it is in ``target`` and ``weights`` does not give it 0; ``pred`` must have it with the
            same shape.
        scale: per group, the per-coefficient standard deviation over the corpus (a tensor broadcastable to the
            group's trailing dims, e.g. ``(NS,)``) or one float; clamped at ``eps`` so a constant coefficient
            does not divide by zero.
        weights: per-group weights (default 1 for every group in ``target``).
        mask: ``(B, T)`` frames that count (the targets' leading dims; fitted pseudo-ground truth: the frames fitted
            well), None: all; a mean over the masked frames (0 with none).
    Returns:
        ``{group: weighted term}`` (scalars; no total: the caller sums). Each is a mean, so it does not change
        with the batch size.
    """
    weights = weights or {}
    out: dict[str, torch.Tensor] = {}
    for name, tgt in target.items():
        w = float(weights.get(name, 1.0))
        if w == 0.0:
            continue
        if name not in pred:
            raise KeyError(f"parameter_loss: prediction lacks group {name!r} (has {sorted(pred)})")
        if name not in scale:
            raise KeyError(f"parameter_loss: no scale for group {name!r} (has {sorted(scale)})")
        p = pred[name]
        if p.shape != tgt.shape:
            raise ValueError(f"parameter_loss: {name!r} predicted {tuple(p.shape)} vs target {tuple(tgt.shape)}")
        s = torch.as_tensor(scale[name], dtype=p.dtype, device=p.device).clamp_min(eps)
        err = ((p - tgt.to(p)) / s).square()
        if mask is None:
            out[name] = w * err.mean()
        else:  # the mean over the coefficients, then over the frames that count
            out[name] = w * masked_mean(err.reshape(*mask.shape, -1).mean(-1), mask)
    return out

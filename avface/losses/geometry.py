"""Losses between meshes: pure functions over vertex tensors."""

from __future__ import annotations

import torch

__all__ = ["vertex_distance_loss"]


def vertex_distance_loss(pred: torch.Tensor, target: torch.Tensor, *, scale_to_mm: float = 1000.0) -> torch.Tensor:
    """Mean Euclidean distance between corresponding vertices, in mm (``scale_to_mm`` as in
    :mod:`avface.metrics.vertices`: 1000 for FLAME's metres).

    Args:
        pred, target: (..., V, 3) meshes with the same topology (target is used as given: detach it to make it a
            fixed target).
    Returns:
        scalar; a mean over every vertex of every mesh, so it does not change with the batch size.
    """
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise ValueError(f"vertex_distance_loss: meshes must be (..., V, 3) alike, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return (pred - target).norm(dim=-1).mean() * scale_to_mm

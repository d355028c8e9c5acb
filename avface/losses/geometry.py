"""Losses between meshes: pure functions over vertex tensors."""

from __future__ import annotations

import torch

__all__ = ["submesh_neighbours", "uniform_laplacian_loss", "vertex_distance_loss"]


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


def submesh_neighbours(faces: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-ring of each vertex of a sub-mesh, within the sub-mesh.

    Args:
        faces: (F, 3) long, the mesh's triangles.
        ids: (K,) long, the sub-mesh's vertex ids (e.g. the lips).
    Returns:
        neighbours (K, D) long indices into ``ids`` (padded with 0), mask (K, D) bool; D = the largest degree.
    """
    local = torch.full((int(faces.max()) + 1,), -1, dtype=torch.long)
    local[ids.cpu()] = torch.arange(len(ids))
    f = local[faces.cpu()]
    f = f[(f >= 0).all(-1)]  # triangles wholly inside the sub-mesh
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges = torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)
    rings = [edges[edges[:, 0] == k, 1] for k in range(len(ids))]
    d = max(1, max(len(r) for r in rings))
    neighbours = torch.zeros(len(ids), d, dtype=torch.long)
    mask = torch.zeros(len(ids), d, dtype=torch.bool)
    for k, r in enumerate(rings):
        neighbours[k, :len(r)], mask[k, :len(r)] = r, True
    return neighbours, mask


def uniform_laplacian_loss(offsets: torch.Tensor, neighbours: torch.Tensor, mask: torch.Tensor, *,
                           scale_to_mm: float = 1000.0) -> torch.Tensor:
    """Smoothness of a per-vertex offset field (NHA's Laplacian term on its predicted vertex offsets): the mean
    squared norm, in mm^2, of ``offset_k - mean of its neighbours' offsets`` over vertices with a neighbour.

    Args:
        offsets: (..., K, 3) metres. neighbours, mask: (K, D) from :func:`submesh_neighbours`.
    Returns:
        scalar; a mean over vertices and meshes, so it does not change with the batch size.
    """
    m = mask.to(offsets)
    ring = (offsets[..., neighbours, :] * m[..., None]).sum(-2) / m.sum(-1, keepdim=True).clamp_min(1.0)
    lap = (offsets - ring) * scale_to_mm
    has = mask.any(-1).to(offsets)
    return (lap.square().sum(-1) * has).sum(-1).mean() / has.sum().clamp_min(1.0)

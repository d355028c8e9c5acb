"""Small procedural meshes for tests and benchmarks (no face model needed): icospheres, planes, a face-like
height field. All faces are counter-clockwise seen from outside / from +z (FLAME's winding)."""

from __future__ import annotations

import numpy as np
import torch


def icosphere(subdivisions: int = 3, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere scaled to ``radius``: (V, 3) float32 vertices, (F, 3) int64 faces (F = 20 * 4^subdivisions)."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(np.asarray(m.vertices), dtype=torch.float32), torch.tensor(
        np.asarray(m.faces), dtype=torch.long
    )


def grid_plane(n: int = 8, size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square plane z = 0 spanning [-size/2, size/2]^2 with (n + 1)^2 vertices and 2 n^2 faces, normal +z.

    Returns:
        vertices (V, 3) float32, faces (F, 3) int64, uv (V, 2) float32 in [0, 1] (u = x right, v = y up).
    """
    t = torch.linspace(0.0, 1.0, n + 1)
    vv, uu = torch.meshgrid(t, t, indexing="ij")  # row index = v (y up), column = u (x right)
    uv = torch.stack([uu.reshape(-1), vv.reshape(-1)], dim=1)
    verts = torch.cat([(uv - 0.5) * size, torch.zeros(uv.shape[0], 1)], dim=1)
    i = torch.arange(n)
    r, c = torch.meshgrid(i, i, indexing="ij")
    v00 = (r * (n + 1) + c).reshape(-1)
    v01, v10, v11 = v00 + 1, v00 + (n + 1), v00 + (n + 2)
    # (v00, v01, v11) and (v00, v11, v10) are counter-clockwise seen from +z (x right, y up).
    faces = torch.cat([torch.stack([v00, v01, v11], 1), torch.stack([v00, v11, v10], 1)], dim=0)
    return verts, faces, uv


def face_like_mesh(n: int = 70, size: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A face-sized height field: an ellipsoidal cap with a nose, brow ridge and lips (2 n^2 faces; n = 70 gives
    9,800 faces, about FLAME's 9,976). Metres, +y up, +z towards the viewer, so it renders like a face crop.

    Returns:
        vertices (V, 3) float32, faces (F, 3) int64, uv (V, 2) float32.
    """
    verts, faces, uv = grid_plane(n, size)
    x, y = verts[:, 0] / (size / 2), verts[:, 1] / (size / 2)  # [-1, 1]
    r2 = (x**2 + (y / 1.2) ** 2).clamp(max=1.0)
    z = 0.5 * torch.sqrt(1.0 - 0.8 * r2)
    z = z + 0.18 * torch.exp(-((x / 0.12) ** 2 + ((y + 0.05) / 0.35) ** 2))  # nose
    z = z + 0.04 * torch.exp(-(((y - 0.35) / 0.08) ** 2))  # brow ridge
    z = z + 0.03 * torch.exp(-((x / 0.35) ** 2 + ((y + 0.55) / 0.06) ** 2))  # lips
    verts = torch.stack([verts[:, 0], verts[:, 1], z * size / 2], dim=1)
    return verts, faces, uv

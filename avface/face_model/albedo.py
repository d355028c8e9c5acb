"""UV-space albedo models (FLAME's ``FLAME_texture.npz``, DECA's ``FLAME_albedo_from_BFM.npz``) as the per-vertex
albedo model of a :class:`FaceModelData` (``albedo_mean (V, 3)``, ``albedo_basis (V, 3, NA)``).

Layouts (read with ``np.load(allow_pickle=False)``): ``FLAME_texture.npz``: ``mean (H, W, 3)``, ``tex_dir
(H, W, 3, K)`` in 0..255; ``FLAME_albedo_from_BFM.npz``: ``MU (1, H*W*3)``, ``PC (H*W*3, K)`` in 0..1 (DECA's
``texture_path``). The image is sampled bilinearly at each vertex's UV coordinates (v up, row 0 at the top);
a vertex on a UV seam has several UV coordinates and gets their mean.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from avface.face_model.data import FaceModelData

__all__ = ["read_uv_albedo", "per_vertex_albedo", "with_uv_albedo"]


def read_uv_albedo(path: str | os.PathLike, n_albedo: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (H, W, 3), basis (H, W, 3, K))`` in [0, 1] from either layout; K = min(n_albedo, available)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz albedo model: {e}") from e
    with z:
        keys = set(z.files)
        if {"mean", "tex_dir"} <= keys:
            mean, basis, scale = z["mean"], z["tex_dir"][..., :n_albedo], 1.0 / 255.0
            if mean.ndim != 3 or basis.ndim != 4 or mean.shape != basis.shape[:3]:
                raise ValueError(f"{path}: FLAME_texture layout expects mean (H,W,3) and tex_dir (H,W,3,K), got "
                                 f"{mean.shape} and {basis.shape}")
        elif {"MU", "PC"} <= keys:
            mu, pc = z["MU"].reshape(-1), z["PC"]
            side = int(round(np.sqrt(mu.size / 3)))
            if side * side * 3 != mu.size or pc.shape[0] != mu.size:
                raise ValueError(f"{path}: BFM albedo layout expects MU (1, S*S*3), PC (S*S*3, K), got {z['MU'].shape}"
                                 f" and {pc.shape}")
            mean = mu.reshape(side, side, 3)
            basis = pc[:, :n_albedo].reshape(side, side, 3, -1)
            scale = 1.0
        else:
            raise ValueError(f"{path}: unknown albedo model (keys {sorted(keys)}; expected mean/tex_dir of "
                             "FLAME_texture.npz or MU/PC of FLAME_albedo_from_BFM.npz)")
        return (mean * scale).astype(np.float32), (basis * scale).astype(np.float32)


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """image (H, W, ...) sampled at uv (N, 2) in [0, 1] (v up) -> (N, ...)."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx = (x - x0).reshape(-1, *([1] * (image.ndim - 2)))
    fy = (y - y0).reshape(-1, *([1] * (image.ndim - 2)))
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def per_vertex_albedo(data: FaceModelData, mean: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UV images -> ``(albedo_mean (V, 3), albedo_basis (V, 3, K))``: each vertex averages the samples at the UV
    coordinates its faces give it."""
    v = data.v_template.shape[0]
    vert = data.faces.reshape(-1)
    uvi = data.uv_faces.reshape(-1)
    pairs = np.unique(np.stack([vert, uvi], 1), axis=0)  # (vertex, uv vertex) pairs
    m = _bilinear(mean, data.uv_coords[pairs[:, 1]])  # (P, 3)
    b = _bilinear(basis, data.uv_coords[pairs[:, 1]])  # (P, 3, K)
    count = np.bincount(pairs[:, 0], minlength=v).astype(np.float32)
    if np.any(count == 0):
        raise ValueError(f"{int((count == 0).sum())} vertices of {data.name!r} are in no face: no UV to sample")
    out_m = np.zeros((v, 3), np.float32)
    out_b = np.zeros((v, 3, b.shape[-1]), np.float32)
    np.add.at(out_m, pairs[:, 0], m)
    np.add.at(out_b, pairs[:, 0], b)
    return out_m / count[:, None], out_b / count[:, None, None]


def with_uv_albedo(data: FaceModelData, path: str | os.PathLike, n_albedo: int = 50) -> FaceModelData:
    """A copy of ``data`` whose albedo model is the UV albedo model in ``path`` (see the module docstring)."""
    mean, basis = read_uv_albedo(path, n_albedo)
    am, ab = per_vertex_albedo(data, mean, basis)
    return dataclasses.replace(data, albedo_mean=np.clip(am, 0.0, 1.0), albedo_basis=ab)

"""Mesh helpers over numpy arrays shared by the face-model builders and loaders: OBJ reading, vertex normals,
point-in-polygon and point-to-polyline distance."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["dist_to_polyline", "point_in_polygon", "read_obj", "vertex_normals"]


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read a triangle OBJ with separately indexed UVs. Returns ``(v (V,3), f (F,3), vt (VT,2), ft (F,3))``."""
    v, vt, f, ft = [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s = line.split()
            if not s:
                continue
            if s[0] == "v":
                v.append([float(x) for x in s[1:4]])
            elif s[0] == "vt":
                vt.append([float(x) for x in s[1:3]])
            elif s[0] == "f":
                if len(s) != 4:
                    raise ValueError(f"{path}: only triangles are supported, got a face with {len(s) - 1} vertices")
                parts = [t.split("/") for t in s[1:]]
                f.append([int(p[0]) - 1 for p in parts])
                ft.append([int(p[1]) - 1 if len(p) > 1 and p[1] else int(p[0]) - 1 for p in parts])
    return (np.asarray(v, np.float64), np.asarray(f, np.int64), np.asarray(vt, np.float64).reshape(-1, 2),
            np.asarray(ft, np.int64))


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals. v: (V, 3); f: (F, 3). Returns (V, 3)."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def point_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of 2-D points (N, 2) against a closed polygon (M, 2)."""
    x, y = pts[:, 0][:, None], pts[:, 1][:, None]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cond = (y0 > y) != (y1 > y)
    xi = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1e-12, y1 - y0)
    return (cond & (x < xi)).sum(1) % 2 == 1


def dist_to_polyline(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of points p (N, D) to an open polyline poly (K, D). Returns (N,)."""
    a, b = poly[:-1][None], poly[1:][None]
    ab = b - a
    t = np.clip(np.einsum("nkc,nkc->nk", p[:, None] - a, ab) / np.maximum((ab**2).sum(-1), 1e-18), 0, 1)
    return np.linalg.norm(p[:, None] - (a + t[..., None] * ab), axis=-1).min(1)

"""Exact unsigned point-to-triangle-mesh distances: a spatial index (KD-tree over sub-triangle centroids with a
bound that makes the answer exact) and the all-pairs reference it is tested and benchmarked against.

The index splits every triangle into n_T^2 congruent sub-triangles (n_T = ceil(longest edge / spacing), spacing =
the median longest edge, so large triangles do not loosen the bound) and keeps their centroids in a KD-tree.
Exactness: with R = the largest centroid-to-vertex distance of any sub-triangle, every point of a triangle T lies
within R of one of T's sub-centroids, so dist(p, T) >= min_c |p - c| - R. After the exact distance u to the
triangles owning the k nearest sub-centroids, a triangle that could be closer has a sub-centroid within u + R:
when the k-th sub-centroid is at least that far, no other triangle can win; otherwise the point is re-queried with
4x more neighbours. Of the fetched ones only sub-triangles with |p - c| - r_c < u (r_c: that sub-triangle's own
radius) are tested exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["MeshDistances", "closest_points_on_triangles", "TriangleIndex", "point_mesh_distance_allpairs"]


@dataclass
class MeshDistances:
    """distances: (N,) unsigned; closest: (N, 3) closest surface points; face_ids: (N,) the triangle of each."""

    distances: np.ndarray
    closest: np.ndarray
    face_ids: np.ndarray


def _closest_on_segments(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Closest points on segments ab. p, a, b: (M, 3) -> (M, 3)."""
    ab = b - a
    denom = np.einsum("ij,ij->i", ab, ab)
    t = np.where(denom > 0, np.einsum("ij,ij->i", p - a, ab) / np.where(denom > 0, denom, 1.0), 0.0)
    return a + np.clip(t, 0.0, 1.0)[:, None] * ab


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point of triangle (a, b, c) to p, row by row (Ericson, Real-Time Collision Detection 5.1.5).
    p, a, b, c: (M, 3) float64 -> (M, 3). Degenerate (zero-area) triangles fall back to their three edges."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    with np.errstate(divide="ignore", invalid="ignore"):
        v_ab = d1 / (d1 - d3)
        w_ac = d2 / (d2 - d6)
        w_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        denom = 1.0 / (va + vb + vc)
        v_in, w_in = vb * denom, vc * denom
    # np.select takes the first true condition: the same order as Ericson's early returns
    conds = [(d1 <= 0) & (d2 <= 0), (d3 >= 0) & (d4 <= d3), (vc <= 0) & (d1 >= 0) & (d3 <= 0),
             (d6 >= 0) & (d5 <= d6), (vb <= 0) & (d2 >= 0) & (d6 <= 0),
             (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)]
    # each region's closest point as barycentric (v, w): point = a + v ab + w ac
    v = np.select(conds, [0.0, 1.0, v_ab, 0.0, 0.0, 1.0 - w_bc], v_in)
    w = np.select(conds, [0.0, 0.0, 0.0, 1.0, w_ac, w_bc], w_in)
    out = a + v[:, None] * ab + w[:, None] * ac
    bad = ~np.isfinite(out).all(1)
    if bad.any():  # zero-area triangle: the closest of its three edges
        pb, ab_, bb, cb = p[bad], a[bad], b[bad], c[bad]
        cands = np.stack([_closest_on_segments(pb, ab_, bb), _closest_on_segments(pb, bb, cb),
                          _closest_on_segments(pb, cb, ab_)])  # (3, M, 3)
        k = np.argmin(((cands - pb) ** 2).sum(-1), axis=0)
        out[bad] = cands[k, np.arange(len(pb))]
    return out


def _subcentroid_barycentrics(n: int) -> np.ndarray:
    """(u, v) barycentric coordinates (point = a + u (b - a) + v (c - a)) of the centroids of the n^2 sub-triangles
    of a triangle split n times along each edge -> (n^2, 2)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    up = (i + j) <= n - 1
    down = (i + j) <= n - 2
    uv_up = np.stack([i[up] + 1 / 3, j[up] + 1 / 3], 1)
    uv_down = np.stack([i[down] + 2 / 3, j[down] + 2 / 3], 1)
    return np.concatenate([uv_up, uv_down]) / n


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"need vertices (V, 3) and faces (F>0, 3), got {v.shape} and {f.shape}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"face indices out of range [0, {len(v)}): min {f.min()}, max {f.max()}")
    return v, f


class TriangleIndex:
    """Exact nearest-surface queries on a fixed triangle mesh. vertices: (V, 3), faces: (F, 3).

    ``index.query(points (N, 3), k=8) -> MeshDistances``. Build once per mesh; moving the query points instead of
    the mesh (as the scan-to-mesh refinement does) keeps one index valid for every iteration.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, workers: int = 1, spacing: float | None = None):
        v, f = _check_mesh(vertices, faces)
        self.triangles = v[f]  # (F, 3, 3)
        tri = self.triangles
        edges = np.linalg.norm(tri[:, [1, 2, 0]] - tri, axis=-1).max(1)  # (F,) longest edge
        spacing = float(spacing or np.median(edges)) or 1.0
        n_sub = np.maximum(1, np.ceil(edges / spacing)).astype(np.int64)  # (F,)
        centroid = tri.mean(1)
        r_tri = np.linalg.norm(tri - centroid[:, None], axis=-1).max(1)
        # sub-triangles are the parent scaled by 1 / n (the "down" ones point-reflected): radius r_T / n_T
        self.radius = float((r_tri / n_sub).max())
        cents, owners, radii = [], [], []
        for n in np.unique(n_sub):
            ids = np.nonzero(n_sub == n)[0]
            uv = _subcentroid_barycentrics(int(n))  # (n^2, 2)
            a, ab, ac = tri[ids, 0], tri[ids, 1] - tri[ids, 0], tri[ids, 2] - tri[ids, 0]
            cents.append((a[:, None] + uv[None, :, :1] * ab[:, None] + uv[None, :, 1:] * ac[:, None]).reshape(-1, 3))
            owners.append(np.repeat(ids, len(uv)))
            radii.append(np.repeat(r_tri[ids] / n, len(uv)))
        self.samples = np.concatenate(cents)
        self.owner = np.concatenate(owners)
        self.sample_radius = np.concatenate(radii)  # a candidate needs |p - c| - r_c < u (tighter than R)
        self.tree = cKDTree(self.samples)
        self.workers = workers

    def _distances(self, points: np.ndarray, face_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.triangles[face_ids]
        cl = closest_points_on_triangles(points, t[:, 0], t[:, 1], t[:, 2])
        return np.linalg.norm(points - cl, axis=-1), cl

    def query(self, points: np.ndarray, k: int = 16) -> MeshDistances:
        """Exact distances of points (N, 3) to the mesh. ``k``: sub-centroids fetched per point in the first round
        (a speed knob only; points whose bound is not met are re-queried with 4x more)."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {p.shape}")
        n, n_s = len(p), len(self.samples)
        dist, closest = np.full(n, np.inf), np.zeros((n, 3))
        face = np.full(n, -1, dtype=np.int64)
        todo, kk = np.arange(n), max(1, min(k, n_s))
        while todo.size:
            m = len(todo)
            dc, sid = self.tree.query(p[todo], k=kk, workers=self.workers)
            sid = sid.reshape(m, kk)
            dc, tri = dc.reshape(m, kk), self.owner[sid]
            # the nearest sub-centroid's triangle gives u; then every fetched sub-triangle that could be closer
            self._update(p, todo, tri[:, :1], np.ones((m, 1), bool), dist, closest, face)
            cand = dc - self.sample_radius[sid] < dist[todo][:, None]
            cand[:, 0] = False
            self._update(p, todo, tri, cand, dist, closest, face)
            done = (dc[:, -1] - self.radius >= dist[todo]) | (kk >= n_s)
            todo, kk = todo[~done], min(kk * 4, n_s)
        return MeshDistances(dist, closest, face)

    def _update(self, p: np.ndarray, rows: np.ndarray, tri: np.ndarray, use: np.ndarray, dist: np.ndarray,
                closest: np.ndarray, face: np.ndarray) -> None:
        """Test the (row, triangle) pairs where ``use`` (m, K) and keep each row's nearest (in place)."""
        r_idx, c_idx = np.nonzero(use)
        if r_idx.size == 0:
            return
        d, cl = self._distances(p[rows[r_idx]], tri[r_idx, c_idx])
        dense = np.full(use.shape, np.inf)
        dense[r_idx, c_idx] = d
        j = np.argmin(dense, axis=1)
        best = dense[np.arange(len(rows)), j]
        better = best < dist[rows]
        pos = np.full(use.shape, -1, dtype=np.int64)
        pos[r_idx, c_idx] = np.arange(r_idx.size)
        sel = pos[np.nonzero(better)[0], j[better]]
        target = rows[better]
        dist[target], closest[target], face[target] = best[better], cl[sel], tri[r_idx[sel], c_idx[sel]]


def point_mesh_distance_allpairs(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                                 chunk: int = 64) -> MeshDistances:
    """Reference: the exact distance of every point to every triangle, minimum per point (O(N F); tests and the
    benchmark's baseline). points: (N, 3), vertices: (V, 3), faces: (F, 3)."""
    v, f = _check_mesh(vertices, faces)
    p = np.asarray(points, dtype=np.float64)
    tri = v[f]
    n_f = len(f)
    dist, closest, face = np.empty(len(p)), np.empty((len(p), 3)), np.empty(len(p), dtype=np.int64)
    for s in range(0, len(p), chunk):
        pc = p[s: s + chunk]
        m = len(pc)
        pp = np.repeat(pc, n_f, axis=0)
        a, b, c = (np.tile(tri[:, i], (m, 1)) for i in range(3))
        cl = closest_points_on_triangles(pp, a, b, c).reshape(m, n_f, 3)
        d = np.linalg.norm(cl - pc[:, None], axis=-1)
        j = np.argmin(d, axis=1)
        rows = np.arange(m)
        dist[s: s + m], closest[s: s + m], face[s: s + m] = d[rows, j], cl[rows, j], j
    return MeshDistances(dist, closest, face)

"""Exact unsigned point-to-triangle-mesh distances: a spatial index (KD-tree over triangle centroids with a bound
that makes the answer exact) and the all-pairs reference it is tested and benchmarked against.

Exactness of the index: for a triangle T with centroid c_T and R = max over all triangles of the largest
centroid-to-vertex distance, every point of T lies within R of c_T, so dist(p, T) >= |p - c_T| - R. After the
exact distance u to the k triangles with the nearest centroids, any triangle that could be closer has
|p - c_T| < u + R: when the k-th centroid is at least that far no other triangle can win; otherwise the point is
re-queried with a ball of radius u + R around it (all candidates, exact).
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
    out = np.empty_like(p)
    region = np.select(conds, np.arange(6), default=6)
    for r, fn in enumerate((lambda m: a[m], lambda m: b[m], lambda m: a[m] + v_ab[m, None] * ab[m],
                            lambda m: c[m], lambda m: a[m] + w_ac[m, None] * ac[m],
                            lambda m: b[m] + w_bc[m, None] * (c[m] - b[m]),
                            lambda m: a[m] + ab[m] * v_in[m, None] + ac[m] * w_in[m, None])):
        m = region == r
        if m.any():
            out[m] = fn(m)
    bad = ~np.isfinite(out).all(1)
    if bad.any():  # zero-area triangle: the closest of its three edges
        pb, ab_, bb, cb = p[bad], a[bad], b[bad], c[bad]
        cands = np.stack([_closest_on_segments(pb, ab_, bb), _closest_on_segments(pb, bb, cb),
                          _closest_on_segments(pb, cb, ab_)])  # (3, M, 3)
        k = np.argmin(((cands - pb) ** 2).sum(-1), axis=0)
        out[bad] = cands[k, np.arange(len(pb))]
    return out


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

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, workers: int = 1):
        v, f = _check_mesh(vertices, faces)
        self.triangles = v[f]  # (F, 3, 3)
        self.centroids = self.triangles.mean(1)
        self.radius = float(np.linalg.norm(self.triangles - self.centroids[:, None], axis=-1).max())
        self.tree = cKDTree(self.centroids)
        self.workers = workers

    def _distances(self, points: np.ndarray, face_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.triangles[face_ids]
        cl = closest_points_on_triangles(points, t[:, 0], t[:, 1], t[:, 2])
        return np.linalg.norm(points - cl, axis=-1), cl

    def query(self, points: np.ndarray, k: int = 8) -> MeshDistances:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {p.shape}")
        n, n_f = len(p), len(self.centroids)
        k = max(1, min(k, n_f))
        dc, idx = self.tree.query(p, k=k, workers=self.workers)
        dc, idx = dc.reshape(n, k), idx.reshape(n, k)
        d, cl = self._distances(np.repeat(p, k, axis=0), idx.reshape(-1))
        d, cl = d.reshape(n, k), cl.reshape(n, k, 3)
        j = np.argmin(d, axis=1)
        rows = np.arange(n)
        dist, closest, face = d[rows, j], cl[rows, j], idx[rows, j]
        if k < n_f:
            redo = np.nonzero(dc[:, -1] - self.radius < dist)[0]  # a triangle outside the k might be closer
            if redo.size:
                balls = self.tree.query_ball_point(p[redo], r=dist[redo] + self.radius, workers=self.workers)
                counts = np.fromiter((len(b) for b in balls), dtype=np.int64, count=len(balls))
                cand = np.fromiter((i for b in balls for i in b), dtype=np.int64, count=int(counts.sum()))
                owner = np.repeat(redo, counts)
                d2, cl2 = self._distances(p[owner], cand)
                order = np.lexsort((d2, owner))  # per owner, nearest first
                first = order[np.r_[0, np.nonzero(np.diff(owner[order]))[0] + 1]]
                o = owner[first]
                better = d2[first] < dist[o]
                o, first = o[better], first[better]
                dist[o], closest[o], face[o] = d2[first], cl2[first], cand[first]
        return MeshDistances(dist, closest, face)


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

"""NoW-style scan-to-mesh error (Sanyal et al. 2019; soubhiksanyal/now_evaluation), as that evaluation does it.

1. Crop the scan around its landmarks: centre = lm4 + 0.3 (bridge - lm4) with bridge = (lm1 + lm2) / 2,
   radius = 1.4 (|lm0 - lm3| + |bridge - lm4|) / 2 (lm = the 7 NoW landmarks, 68-point ids
   [36, 39, 42, 45, 33, 48, 54]: R eye outer, R eye inner, L eye inner, L eye outer, subnasale, mouth corners).
2. Similarity Procrustes of the predicted mesh's 7 landmarks onto the scan's.
3. Rigid + scale refinement minimising the sum of squared unsigned scan-to-mesh distances. NoW minimises it with a
   generic optimiser; here with Gauss-Newton steps on the point-to-plane linearisation (the distance residuals'
   gradients), and where such a step does not lower the objective, a point-to-point ICP step (closest surface
   points, then the closed-form similarity), which never raises it; until the relative decrease is below ``tol``.
4. Error = unsigned distance of every cropped scan vertex to the closest point of the aligned predicted surface.

Units are the inputs' (millimetres for Multiface). NoW's reflection='best' is not used: only proper rotations (a
mirrored face is never the right alignment). ``scale=False`` is NoW's metrical variant (unit scale throughout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from avface.metrics.alignment import Similarity, similarity_procrustes
from avface.metrics.surface import TriangleIndex

__all__ = ["NOW_LANDMARKS_68", "ScanToMeshResult", "crop_scan", "scan_to_mesh", "distance_stats", "mesh_vertex_errors"]

NOW_LANDMARKS_68: tuple[int, ...] = (36, 39, 42, 45, 33, 48, 54)


@dataclass
class ScanToMeshResult:
    """distances: (M,) per cropped scan vertex; crop: (N,) bool which scan vertices were kept; the similarity
    (scale, rotation (3, 3), translation (3,)) that maps the predicted mesh onto the scan; ``aligned``: (V, 3)
    the predicted vertices after it; iterations: refinement steps run."""

    distances: np.ndarray
    median: float
    mean: float
    std: float
    crop: np.ndarray
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    aligned: np.ndarray
    iterations: int


def crop_scan(scan: np.ndarray, landmarks7: np.ndarray) -> np.ndarray:
    """NoW's face crop. scan: (N, 3); landmarks7: (7, 3) on the scan -> (N,) bool."""
    lm = np.asarray(landmarks7, dtype=np.float64)
    if lm.shape != (7, 3):
        raise ValueError(f"landmarks7 must be (7, 3) (NoW order), got {lm.shape}")
    bridge = (lm[1] + lm[2]) / 2
    centre = lm[4] + 0.3 * (bridge - lm[4])
    radius = 1.4 * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(bridge - lm[4])) / 2
    return np.linalg.norm(np.asarray(scan, dtype=np.float64) - centre, axis=-1) <= radius


def distance_stats(distances: np.ndarray | Sequence[np.ndarray]) -> dict[str, float]:
    """median / mean / std of all distances (a list of per-frame arrays is concatenated first, as NoW does)."""
    d = np.concatenate([np.ravel(x) for x in distances]) if not isinstance(distances, np.ndarray) else distances
    if d.size == 0:
        raise ValueError("distance_stats: no distances")
    return {"median": float(np.median(d)), "mean": float(np.mean(d)), "std": float(np.std(d))}


def _sim_np(sim: Similarity) -> tuple[float, np.ndarray, np.ndarray]:
    return float(sim.scale[0]), sim.rotation[0].numpy(), sim.translation[0].numpy()


def _procrustes(src: np.ndarray, dst: np.ndarray, scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    return _sim_np(similarity_procrustes(torch.from_numpy(src)[None], torch.from_numpy(dst)[None], scale=scale))


def _gauss_newton_step(q: np.ndarray, y: np.ndarray, normals: np.ndarray, s: float, R: np.ndarray, t: np.ndarray,
                       scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """One Gauss-Newton step of min sum_i (n_i . (q_i - delta(y_i)))^2 over a small similarity delta
    (log-scale, rotation vector, translation) about the scan centroid, composed onto (s, R, t).
    q, y: (M, 3) scan points and their closest points on the aligned mesh; normals: (M, 3) unit."""
    c = q.mean(0)
    yc = y - c
    r = np.einsum("ij,ij->i", normals, q - y)  # (M,) signed distances along the normals
    cols = [np.cross(yc, normals), normals]  # d/d omega, d/d tau
    if scale:
        cols.insert(0, np.einsum("ij,ij->i", normals, yc)[:, None])
    J = np.concatenate(cols, axis=1)  # (M, 6|7): residual r - J x
    x, *_ = np.linalg.lstsq(J, r, rcond=None)
    sigma = float(x[0]) if scale else 0.0
    omega, tau = x[-6:-3], x[-3:]
    dR = Rotation.from_rotvec(omega).as_matrix()
    ds = float(np.exp(sigma))
    # new(x) = c + ds dR (s R x + t - c) + tau
    return ds * s, dR @ R, c + ds * dR @ (t - c) + tau


def scan_to_mesh(scan: np.ndarray, scan_landmarks7: np.ndarray, pred_vertices: np.ndarray, pred_faces: np.ndarray,
                 pred_landmarks7: np.ndarray, *, crop: bool = True, refine: bool = True, scale: bool = True,
                 max_iterations: int = 50, tol: float = 1e-7, index: TriangleIndex | None = None) -> ScanToMeshResult:
    """Scan-to-mesh error of one frame. scan: (N, 3) scan (or ground-truth mesh) vertices; scan_landmarks7: (7, 3);
    pred_vertices: (V, 3), pred_faces: (F, 3), pred_landmarks7: (7, 3) on the prediction.

    ``index``: a :class:`TriangleIndex` of (pred_vertices, pred_faces) to reuse (it is built otherwise).
    """
    scan = np.asarray(scan, dtype=np.float64)
    pred = np.asarray(pred_vertices, dtype=np.float64)
    keep = crop_scan(scan, scan_landmarks7) if crop else np.ones(len(scan), dtype=bool)
    q = scan[keep]
    if len(q) == 0:
        raise ValueError("scan_to_mesh: the crop around the scan landmarks keeps no scan vertex")
    s, R, t = _procrustes(np.asarray(pred_landmarks7, np.float64), np.asarray(scan_landmarks7, np.float64), scale)
    index = index or TriangleIndex(pred, pred_faces)

    def query(s: float, R: np.ndarray, t: np.ndarray):
        # distance to the moved mesh s R M + t == s * distance of the inversely moved scan to M (one index)
        res = index.query(((q - t) @ R) / s)
        return res, s * res.distances

    tri = index.triangles
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_normals /= np.maximum(np.linalg.norm(face_normals, axis=1, keepdims=True), 1e-300)

    res, d = query(s, R, t)
    cost, it = float(np.mean(d**2)), 0
    while refine and it < max_iterations:
        it += 1
        y = s * res.closest @ R.T + t  # closest points on the aligned mesh
        n = q - y
        nn = np.linalg.norm(n, axis=1, keepdims=True)
        n = np.where(nn > 1e-9, n / np.maximum(nn, 1e-300), face_normals[res.face_ids] @ R.T)
        s2, R2, t2 = _gauss_newton_step(q, y, n, s, R, t, scale)
        res2, d2 = query(s2, R2, t2)
        cost2 = float(np.mean(d2**2))
        if not cost2 <= cost:  # fall back to the point-to-point step, which cannot raise the objective
            s2, R2, t2 = _procrustes(res.closest, q, scale)
            res2, d2 = query(s2, R2, t2)
            cost2 = float(np.mean(d2**2))
            if cost2 > cost:  # only rounding can get here: keep the better one
                break
        s, R, t, res, d = s2, R2, t2, res2, d2
        done = cost - cost2 <= tol * max(cost, 1e-30)
        cost = cost2
        if done:
            break
    stats = distance_stats(d)
    return ScanToMeshResult(distances=d, crop=keep, scale=s, rotation=R, translation=t,
                            aligned=s * pred @ R.T + t, iterations=it, **stats)


def mesh_vertex_errors(vertices: np.ndarray, gt_vertices: np.ndarray, gt_faces: np.ndarray) -> np.ndarray:
    """Per-vertex error on the prediction (the paper's Fig. 6): unsigned distance of every aligned predicted vertex
    (V, 3) (``ScanToMeshResult.aligned``) to the ground-truth surface (gt_vertices (G, 3), gt_faces (F, 3)) -> (V,)."""
    return TriangleIndex(gt_vertices, gt_faces).query(vertices).distances

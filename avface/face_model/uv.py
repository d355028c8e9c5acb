"""UVs for a mesh: from a template OBJ with the same triangles, or a generated cylindrical projection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avface.face_model.mesh import read_obj

__all__ = ["cylindrical_uv", "uv_from_template"]


def cylindrical_uv(v: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cylindrical UVs: u = 0.5 + atan2(x, z) / (2 pi) about the centroid (face at u = 0.5, seam at the back),
    v = height normalised to [0, 1] (v up).

    v: (V, 3); faces: (F, 3). Returns (uv_coords (VT, 2) in [0, 1], uv_faces (F, 3)): the V per-vertex UVs, then
    one copy at u = 1 of each vertex that a triangle crossing the seam has on the u ~ 0 side. Those triangles
    become thin slivers at the u = 1 edge instead of spanning the whole map (which, as the UV rasterization has
    no depth order, would hide other triangles' texels in ``FaceRenderer.uv_maps``).
    """
    c = v.mean(axis=0)
    u = 0.5 + np.arctan2(v[:, 0] - c[0], v[:, 2] - c[2]) / (2 * np.pi)
    y = v[:, 1]
    vv = (y - y.min()) / max(float(np.ptp(y)), 1e-12)
    uv = np.clip(np.stack([u, vv], 1), 0.0, 1.0)
    uv_faces = np.array(faces, dtype=np.int64, copy=True)
    tri_u = uv[uv_faces, 0]
    seam = np.ptp(tri_u, axis=1) > 0.5
    low = seam[:, None] & (tri_u < 0.5)  # corners of seam triangles on the u ~ 0 side
    if low.any():
        ids = np.unique(uv_faces[low])
        copies = np.stack([np.ones(len(ids)), uv[ids, 1]], 1)
        uv_faces[low] = len(uv) + np.searchsorted(ids, uv_faces[low])
        uv = np.concatenate([uv, copies])
    return uv, uv_faces


def uv_from_template(obj_path: Path, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UVs of a template OBJ with the same triangles as ``faces`` (F, 3), in any order or rotation.
    Returns (uv_coords (VT, 2), uv_faces (F, 3)) indexed like ``faces``."""
    v, f, vt, ft = read_obj(obj_path)
    if len(vt) == 0:
        raise ValueError(f"UV template {obj_path} has no texture coordinates")
    if len(f) != len(faces):
        raise ValueError(f"UV template {obj_path} has {len(f)} faces, the model {len(faces)}")
    if np.array_equal(f, faces):
        return vt, ft
    # Same triangles in another order or rotation: match by the sorted vertex triple.
    lookup = {tuple(sorted(t)): (k, t) for k, t in enumerate(f.tolist())}
    uv_faces = np.zeros_like(faces)
    for k, tri in enumerate(faces.tolist()):
        hit = lookup.get(tuple(sorted(tri)))
        if hit is None:
            raise ValueError(f"UV template {obj_path}: triangle {tri} of the model is not in the template")
        j, t = hit
        uv_faces[k] = [ft[j][t.index(i)] for i in tri]
    return vt, uv_faces

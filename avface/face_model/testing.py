"""Small random FLAME-structured models and an independent reference implementation of FLAME skinning, for tests
(here and in other modules) that need a face model without the starter model's size or FLAME's licence."""

from __future__ import annotations

import numpy as np

from avface.face_model.data import REQUIRED_REGIONS, FaceModelData

__all__ = ["random_face_model_data", "reference_flame_numpy"]


def random_face_model_data(seed: int = 0, n_vertices: int = 64, n_faces: int = 96, n_shape: int = 12,
                           n_expression: int = 8, n_albedo: int = 4, dynamic: bool = True) -> FaceModelData:
    """A random but valid FLAME-structured model: 5 joints in FLAME's tree (parents -1, 0, 1, 1, 1), random
    blendshapes, pose correctives, a dense non-negative J_regressor, normalised skinning weights that use every
    joint, a random landmark embedding (and a dynamic contour table when ``dynamic``), albedo and regions."""
    rng = np.random.default_rng(seed)
    V, J = n_vertices, 5
    v = rng.normal(scale=0.05, size=(V, 3))
    faces = np.stack([rng.choice(V, size=3, replace=False) for _ in range(n_faces)])
    jr = rng.random((J, V)) * (rng.random((J, V)) < 0.2)
    jr[:, 0] += 1e-3
    jr /= jr.sum(1, keepdims=True)
    w = rng.random((V, J)) ** 3
    w /= w.sum(1, keepdims=True)
    bary = rng.random((68, 3))
    bary /= bary.sum(1, keepdims=True)
    kw = {}
    if dynamic:
        db = rng.random((79, 17, 3))
        kw = {"dynamic_lmk_faces": rng.integers(0, n_faces, (79, 17)),
              "dynamic_lmk_bary": db / db.sum(-1, keepdims=True)}
    regions = {r: np.sort(rng.choice(V, size=5, replace=False)) for r in REQUIRED_REGIONS}
    return FaceModelData(
        name=f"random-{seed}",
        v_template=v,
        faces=faces,
        shapedirs=rng.normal(scale=0.01, size=(V, 3, n_shape)),
        exprdirs=rng.normal(scale=0.01, size=(V, 3, n_expression)),
        posedirs=rng.normal(scale=0.01, size=(9 * (J - 1), V * 3)),
        J_regressor=jr,
        parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=w,
        uv_coords=rng.random((V, 2)),
        uv_faces=faces,
        lmk68_faces=rng.integers(0, n_faces, 68),
        lmk68_bary=bary,
        albedo_mean=rng.random((V, 3)),
        albedo_basis=rng.normal(scale=0.05, size=(V, 3, n_albedo)),
        regions=regions,
        **kw,
    )


def reference_flame_numpy(data: FaceModelData, shape: np.ndarray, expression: np.ndarray,
                          pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLAME forward pass for one sample, written independently of :mod:`avface.face_model.lbs` (float64, scipy
    rotations, explicit per-joint world matrices and a per-vertex blending loop).

    shape (NS',), expression (NE',) (first components), pose (5, 3) axis-angle. Returns (vertices (V, 3),
    joints (5, 3)).
    """
    from scipy.spatial.transform import Rotation

    ns, ne = len(shape), len(expression)
    v = (data.v_template.astype(np.float64)
         + data.shapedirs[:, :, :ns].astype(np.float64) @ shape
         + data.exprdirs[:, :, :ne].astype(np.float64) @ expression)
    joints = data.J_regressor.astype(np.float64) @ v
    R = [Rotation.from_rotvec(p).as_matrix() for p in pose]
    feat = np.concatenate([(R[j] - np.eye(3)).reshape(-1) for j in range(1, len(R))])
    v_posed = v + (feat @ data.posedirs.astype(np.float64)).reshape(-1, 3)
    world = []
    for j, p in enumerate(data.parents):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0.0)
        world.append(local if p < 0 else world[p] @ local)
    skin = []
    for j in range(len(world)):
        undo = np.eye(4)
        undo[:3, 3] = -joints[j]
        skin.append(world[j] @ undo)
    out = np.zeros_like(v)
    for i in range(len(v)):
        T = sum(data.lbs_weights[i, j] * skin[j] for j in range(len(skin)))
        out[i] = (T @ np.append(v_posed[i], 1.0))[:3]
    return out, np.stack([w[:3, 3] for w in world])

"""Lip deformations outside a face model's expression space ("lip detail").

Real lips move in ways FLAME's expression space does not hold (the vermilion protrudes in /u/, rolls in over the
teeth in /m b p/, the corners pull back in /i/); the paper's lip refinement (sec. 3.2) exists to add those as
per-vertex lip offsets. The synthetic corpus gives its faces such motion so that the refinement has something to
learn and the 3D lip error measures it: ``C = len(LIP_DETAIL_NAMES)`` fixed displacement fields over the lip
vertices, each made orthogonal (over the lips) to the jaw's first-order motion and to the model's named
(semantic) expression directions, the ones the corpus's mouth rig drives (the starter model's
``EXPRESSION_NAMES``; none for FLAME, whose expression space is an unnamed PCA). So the ground-truth expression
and jaw of a clip say nothing of its lip detail.

Why not orthogonal to the whole expression space: 50 smooth expression bases span nearly every smooth field on
the lips (measured on the starter model: 3-7 % of the hand-shaped fields is left outside all 50, and what is left
is rough, max / RMS up to 9), so "outside the space" leaves only noise. Outside the 13 semantic bases and the jaw,
27-61 % is left (max / RMS 2.1-2.5). A model can still reach part of it through the free expression bases, as a
model fit reaches part of real lip detail through FLAME's PCA; the supervised pretraining, fitted to the clip's
expression coefficients, is not shown it.

The fields live in the canonical frame (after the jaw, before the global rotation), as the lip refiner's offsets
do (``AVFace.refine_lips``): a frame's posed offsets are ``R(global_pose) @ (coefficients @ basis)``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LIP_DETAIL_NAMES", "lip_detail_basis", "canonical_offsets_to_posed"]

#: The lip-detail channels, in coefficient order; the corpus drives them by lip rounding, lip press and lip spread.
LIP_DETAIL_NAMES: tuple[str, ...] = ("protrude", "roll_in", "corner_pull")

_JAW_STEP_RAD = 0.05  # jaw opening for the finite-difference jaw motion of the lips


def _raw_fields(lips: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Hand-shaped fields over the lips: lips (K, 3) rest positions (x right, y up, z out of the face), upper (K,)
    bool (upper lip) -> (C, K, 3)."""
    half_width = max(float(np.abs(lips[:, 0] - lips[:, 0].mean()).max()), 1e-6)
    u = (lips[:, 0] - lips[:, 0].mean()) / half_width  # -1 .. 1 from corner to corner
    y0 = 0.5 * (lips[upper, 1].mean() + lips[~upper, 1].mean())  # the mouth line
    side = np.where(upper, 1.0, -1.0)
    r = np.abs(lips[:, 1] - y0)
    r = r / max(float(r.max()), 1e-6)  # 0 at the mouth line, 1 at the lips' outer edge
    bell = np.clip(1.0 - u ** 2, 0.0, None)
    protrude = np.stack([np.zeros_like(u), 0.35 * side * bell * r, bell], 1)  # forward, flaring out
    roll_in = np.stack([np.zeros_like(u), -0.5 * side * bell * (1 - r), -bell * (1 - r)], 1)  # in, towards the line
    corner_pull = np.stack([0.4 * u * np.abs(u), 0.3 * u ** 2, -(u ** 2)], 1)  # corners back and up
    return np.stack([protrude, roll_in, corner_pull]).astype(np.float64)


@torch.no_grad()
def lip_detail_basis(face_model, n_semantic: int) -> torch.Tensor:
    """The lip-detail fields of ``face_model`` (a :class:`~avface.face_model.FaceModel`): (C, K, 3) float64 metres
    over ``face_model.regions["lips"]`` (K vertices, in that order), each with an RMS of 1 mm over the lips,
    orthogonal over the lips to the first ``n_semantic`` expression directions, to the jaw's first-order motion
    and to each other."""
    lip_ids = np.asarray(face_model.regions["lips"], np.int64)
    upper_ids = set(np.asarray(face_model.regions["lip_upper"], np.int64).tolist())
    upper = np.array([i in upper_ids for i in lip_ids.tolist()])
    template = face_model.v_template.double().cpu().numpy()
    raw = _raw_fields(template[lip_ids], upper)  # (C, K, 3)
    k = len(lip_ids)

    # what the mouth rig moves on the lips: the semantic expression directions and the jaw opening
    n_semantic = min(n_semantic, face_model.n_expression)
    expr = face_model.shapedirs[:, :, face_model.n_shape:face_model.n_shape + n_semantic]
    expr = expr.double().cpu().numpy()[lip_ids]  # (K, 3, n_semantic)
    jaw = torch.zeros(1, 3, dtype=face_model.v_template.dtype, device=face_model.v_template.device)
    rest = face_model(jaw_pose=jaw).vertices[0].double().cpu().numpy()
    jaw[0, 0] = _JAW_STEP_RAD
    opened = face_model(jaw_pose=jaw).vertices[0].double().cpu().numpy()
    jaw_motion = ((opened - rest) / _JAW_STEP_RAD)[lip_ids].reshape(k * 3, 1)
    span = np.concatenate([expr.reshape(k * 3, -1), jaw_motion], axis=1)
    q, s, _ = np.linalg.svd(span, full_matrices=False)
    q = q[:, s > 1e-9 * s.max()]

    fields = []
    for f in raw.reshape(len(raw), k * 3):
        f = f - q @ (q.T @ f)
        for g in fields:  # independent channels: coefficients do not alias
            f = f - g * (g @ f) / (g @ g)
        fields.append(f)
    basis = np.stack(fields).reshape(len(raw), k, 3)
    rms = np.sqrt((basis ** 2).sum(-1).mean(-1))  # (C,) metres per unit coefficient
    return torch.from_numpy(basis / rms[:, None, None] * 1e-3)


def canonical_offsets_to_posed(offsets: torch.Tensor, rotation: torch.Tensor, vertex_ids: torch.Tensor,
                               num_vertices: int) -> torch.Tensor:
    """Per-vertex offsets in the canonical frame -> a posed-mesh displacement.

    offsets (N, K, 3) on the vertices ``vertex_ids (K,)``; rotation (N, 3, 3) the global head rotation (LBS rotates
    the canonical head about its root joint, so a displacement just rotates). Returns (N, num_vertices, 3), zero
    off ``vertex_ids``.
    """
    posed = torch.einsum("nij,nkj->nki", rotation, offsets)
    out = torch.zeros(offsets.shape[0], num_vertices, 3, dtype=posed.dtype, device=posed.device)
    return out.index_add(1, vertex_ids, posed)

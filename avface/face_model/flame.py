"""`FaceModel`: the FLAME layer (shape + expression blendshapes, 5-joint skinning, landmark embeddings).

Works with any :class:`~avface.face_model.data.FaceModelData`: the real FLAME (user-supplied) or the open
starter model. Usage::

    model = FaceModel(load_face_model(None), n_shape=100, n_expression=50)
    out = model(shape, expression, global_pose, jaw_pose=jaw)   # FaceModelOutput
    out.vertices  # (B, V, 3) metres
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from avface.face_model.data import NOW7_FROM_68, FaceModelData
from avface.face_model.lbs import batch_rodrigues, lbs
from avface.face_model.lip_detail import LIP_DETAIL_NAMES, canonical_offsets_to_posed, lip_detail_basis

__all__ = ["FaceModel", "FaceModelOutput", "vertices2landmarks", "dynamic_contour_index"]

#: DECA's dynamic contour table has one row per integer degree of (DECA's) yaw: rows 0..39 for yaw 0..39 deg,
#: rows 40..78 for yaw -1..-39 deg (see :func:`dynamic_contour_index` for the sign).
_MAX_YAW_DEG = 39


@dataclass
class FaceModelOutput:
    """Output of :class:`FaceModel`.

    vertices (B, V, 3) posed mesh; joints (B, J, 3) posed joints; landmarks68 (B, 68, 3) static iBUG-68 embedding
    (3D landmarks); landmarks_now7 (B, 7, 3) = landmarks68[:, [36, 39, 42, 45, 33, 48, 54]];
    landmarks68_dynamic (B, 68, 3): the same but with the 17 jaw-contour points taken from the yaw-dependent
    contour embedding when the model has one (what a 2D detector sees on a turned face: use it for 2D landmark
    losses), else identical to landmarks68; v_shaped (B, V, 3) identity + expression in the rest pose.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks68: torch.Tensor
    landmarks_now7: torch.Tensor
    landmarks68_dynamic: torch.Tensor
    v_shaped: torch.Tensor


def vertices2landmarks(
    vertices: torch.Tensor, faces: torch.Tensor, lmk_faces_idx: torch.Tensor, lmk_bary_coords: torch.Tensor
) -> torch.Tensor:
    """Landmarks as barycentric combinations of mesh triangles.

    vertices: (B, V, 3); faces: (F, 3) int64; lmk_faces_idx: (B, L) int64; lmk_bary_coords: (B, L, 3).
    Returns (B, L, 3).
    """
    b, l = lmk_faces_idx.shape
    lmk_vertex_ids = faces[lmk_faces_idx.reshape(-1)].reshape(b, l, 3)  # (B, L, 3)
    batch = torch.arange(b, device=vertices.device).view(b, 1, 1)
    lmk_vertices = vertices[batch, lmk_vertex_ids]  # (B, L, 3 corners, 3 xyz)
    return torch.einsum("blfi,blf->bli", lmk_vertices, lmk_bary_coords)


def dynamic_contour_index(global_pose: torch.Tensor, neck_pose: torch.Tensor) -> torch.Tensor:
    """Row of DECA's dynamic contour table for the head's yaw, as DECA computes it.

    global_pose, neck_pose: (B, 3) axis-angle. Returns (B,) int64 in [0, 78].
    The head rotation is R_global @ R_neck; DECA's yaw is *minus* its euler angle about y,
    ``-atan2(-R[2, 0], sqrt(R[0, 0]^2 + R[1, 0]^2))`` in degrees (so a positive rotation about +y, the face turning
    towards +x, is a negative yaw), rounded and clamped to [-39, 39]; yaw y >= 0 -> row y, yaw y < 0 -> row 39 - y
    (so -1 -> 40, -39 -> 78). FLAME's dynamic embedding files are laid out for this indexing.
    """
    b = global_pose.shape[0]
    rots = batch_rodrigues(torch.cat([global_pose, neck_pose], dim=0).reshape(-1, 3)).reshape(2, b, 3, 3)
    rel = torch.bmm(rots[0], rots[1])
    sy = torch.sqrt(rel[:, 0, 0] ** 2 + rel[:, 1, 0] ** 2)
    yaw = -torch.atan2(-rel[:, 2, 0], sy) * (180.0 / math.pi)
    yaw = torch.round(torch.clamp(yaw, -_MAX_YAW_DEG, _MAX_YAW_DEG)).to(torch.long)
    return torch.where(yaw < 0, _MAX_YAW_DEG - yaw, yaw)


class FaceModel(nn.Module):
    """FLAME-structured morphable face model (differentiable, batched).

    ``FaceModel(data, n_shape=100, n_expression=50)`` keeps the first ``n_shape`` identity and ``n_expression``
    expression components (FLAME has 300/100; the starter model 100/50; AVFace uses 100/50). ``None`` keeps all.
    Convert to float64 with ``model.double()``.
    """

    faces: torch.Tensor
    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    parents: torch.Tensor
    lbs_weights: torch.Tensor
    lmk68_faces: torch.Tensor
    lmk68_bary: torch.Tensor

    def __init__(self, data: FaceModelData, n_shape: int | None = 100, n_expression: int | None = 50) -> None:
        super().__init__()
        n_shape = data.n_shape if n_shape is None else int(n_shape)
        n_expression = data.n_expression if n_expression is None else int(n_expression)
        if not 0 <= n_shape <= data.n_shape:
            raise ValueError(f"n_shape={n_shape}: model {data.name!r} has {data.n_shape} shape components")
        if not 0 <= n_expression <= data.n_expression:
            raise ValueError(
                f"n_expression={n_expression}: model {data.name!r} has {data.n_expression} expression components")
        self.name = data.name
        self.n_semantic_expression = data.n_semantic_expression  # leading named expression bases (FaceModelData)
        self.n_shape = n_shape
        self.n_expression = n_expression
        self.num_joints = data.num_joints
        self.regions = {k: v.copy() for k, v in data.regions.items()}

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        def i64(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

        self.register_buffer("faces", i64(data.faces), persistent=False)
        self.register_buffer("uv_coords", f32(data.uv_coords), persistent=False)
        self.register_buffer("uv_faces", i64(data.uv_faces), persistent=False)
        self.register_buffer("v_template", f32(data.v_template), persistent=False)
        # One blendshape tensor, shape components first (FLAME's own layout): one einsum does both.
        dirs = np.concatenate([data.shapedirs[:, :, :n_shape], data.exprdirs[:, :, :n_expression]], axis=2)
        self.register_buffer("shapedirs", f32(dirs), persistent=False)
        self.register_buffer("posedirs", f32(data.posedirs), persistent=False)
        self.register_buffer("J_regressor", f32(data.J_regressor), persistent=False)
        self.register_buffer("parents", i64(data.parents), persistent=False)
        self.register_buffer("lbs_weights", f32(data.lbs_weights), persistent=False)
        self.register_buffer("lmk68_faces", i64(data.lmk68_faces), persistent=False)
        self.register_buffer("lmk68_bary", f32(data.lmk68_bary), persistent=False)
        self.register_buffer("now7_ids", i64(np.asarray(NOW7_FROM_68)), persistent=False)
        self.has_dynamic_landmarks = data.has_dynamic_landmarks
        if data.has_dynamic_landmarks:
            self.register_buffer("dynamic_lmk_faces", i64(data.dynamic_lmk_faces), persistent=False)
            self.register_buffer("dynamic_lmk_bary", f32(data.dynamic_lmk_bary), persistent=False)
        self.has_albedo = data.has_albedo
        self.n_albedo = data.n_albedo
        self._lip_detail_basis: torch.Tensor | None = None  # built on first use (lip_detail_basis)
        if data.has_albedo:
            self.register_buffer("albedo_mean", f32(data.albedo_mean), persistent=False)
            self.register_buffer("albedo_basis", f32(data.albedo_basis), persistent=False)

    def lip_detail_displacement(self, lip_detail: torch.Tensor, global_pose: torch.Tensor) -> torch.Tensor:
        """lip_detail (B, C) coefficients (mm RMS over the lips per unit), global_pose (B, 3) -> (B, V, 3) posed
        displacement of the lips (zero elsewhere)."""
        if self._lip_detail_basis is None:
            # the starter model's named expression bases are what the synthetic mouth rig drives (none in FLAME)
            self._lip_detail_basis = lip_detail_basis(self, self.n_semantic_expression)
        basis = self._lip_detail_basis.to(self.v_template)  # (C, K, 3)
        if lip_detail.dim() != 2 or lip_detail.shape[1] != basis.shape[0]:
            raise ValueError(f"lip_detail must be (B, {basis.shape[0]}) ({', '.join(LIP_DETAIL_NAMES)}), "
                             f"got {tuple(lip_detail.shape)}")
        offsets = torch.einsum("bc,ckj->bkj", lip_detail.to(basis), basis)
        lip_ids = torch.as_tensor(self.regions["lips"], device=basis.device)
        return canonical_offsets_to_posed(offsets, batch_rodrigues(global_pose.to(basis)), lip_ids,
                                          self.num_vertices)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, vertices={self.num_vertices}, faces={self.faces.shape[0]}, "
                f"n_shape={self.n_shape}, n_expression={self.n_expression}, n_albedo={self.n_albedo}")

    def forward(
        self,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        global_pose: torch.Tensor | None = None,
        neck_pose: torch.Tensor | None = None,
        jaw_pose: torch.Tensor | None = None,
        eye_pose: torch.Tensor | None = None,
        lip_detail: torch.Tensor | None = None,
    ) -> FaceModelOutput:
        """Pose the model.

        shape (B, n_shape); expression (B, n_expression); global_pose, neck_pose, jaw_pose (B, 3) axis-angle;
        eye_pose (B, 6) = left eye (joint 3) then right eye (joint 4). Any argument left out is zeros (at least
        one must be given, to fix B). Fewer coefficients than the model has are zero-padded.
        lip_detail (B, C): optional coefficients of lip motion outside the expression space
        (:mod:`avface.face_model.lip_detail`, the synthetic corpus's lips), added to the lips in the canonical
        frame and rotated with the head; vertices and landmarks include it.
        """
        given = [t for t in (shape, expression, global_pose, neck_pose, jaw_pose, eye_pose) if t is not None]
        if not given:
            raise ValueError("FaceModel needs at least one parameter tensor to know the batch size")
        b = given[0].shape[0]
        dtype, device = self.v_template.dtype, self.v_template.device

        def coeffs(x: torch.Tensor | None, n: int, what: str) -> torch.Tensor:
            if x is None:
                return torch.zeros(b, n, dtype=dtype, device=device)
            if x.dim() != 2 or x.shape[0] != b or x.shape[1] > n:
                raise ValueError(f"{what} must be (B={b}, <= {n}), got {tuple(x.shape)}")
            x = x.to(dtype)
            return x if x.shape[1] == n else torch.nn.functional.pad(x, [0, n - x.shape[1]])

        def rot(x: torch.Tensor | None, n: int, what: str) -> torch.Tensor:
            if x is None:
                return torch.zeros(b, n, dtype=dtype, device=device)
            if tuple(x.shape) != (b, n):
                raise ValueError(f"{what} must be (B={b}, {n}), got {tuple(x.shape)}")
            return x.to(dtype)

        betas = torch.cat([coeffs(shape, self.n_shape, "shape"), coeffs(expression, self.n_expression, "expression")],
                          dim=1)
        gp = rot(global_pose, 3, "global_pose")
        np_ = rot(neck_pose, 3, "neck_pose")
        full_pose = torch.cat([gp, np_, rot(jaw_pose, 3, "jaw_pose"), rot(eye_pose, 6, "eye_pose")], dim=1)
        if self.num_joints != 5:  # pragma: no cover - FaceModelData allows other rigs; FLAME inputs need 5
            raise ValueError(f"FaceModel expects a 5-joint FLAME rig, model has {self.num_joints} joints")

        out = lbs(betas, full_pose, self.v_template, self.shapedirs, self.posedirs, self.J_regressor, self.parents,
                  self.lbs_weights)
        verts = out.vertices
        if lip_detail is not None:
            verts = verts + self.lip_detail_displacement(lip_detail, gp)
        lmk_faces = self.lmk68_faces.unsqueeze(0).expand(b, -1)
        lmk_bary = self.lmk68_bary.unsqueeze(0).expand(b, -1, -1)
        lmk68 = vertices2landmarks(verts, self.faces, lmk_faces, lmk_bary)
        if self.has_dynamic_landmarks:
            row = dynamic_contour_index(gp, np_)
            dyn_faces = self.dynamic_lmk_faces[row]  # (B, 17)
            dyn_bary = self.dynamic_lmk_bary[row].to(dtype)  # (B, 17, 3)
            contour = vertices2landmarks(verts, self.faces, dyn_faces, dyn_bary)
            lmk68_dyn = torch.cat([contour, lmk68[:, 17:]], dim=1)
        else:
            lmk68_dyn = lmk68
        return FaceModelOutput(
            vertices=verts,
            joints=out.joints,
            landmarks68=lmk68,
            landmarks_now7=lmk68[:, self.now7_ids],
            landmarks68_dynamic=lmk68_dyn,
            v_shaped=out.v_shaped,
        )

    def albedo(self, params: torch.Tensor) -> torch.Tensor:
        """Per-vertex albedo ``mean + basis @ params`` (not clamped, so gradients never vanish; clamp when shading).

        params: (B, K) with K <= NA (the first K basis vectors are used). Returns (B, V, 3).
        """
        if not self.has_albedo:
            raise ValueError(f"face model {self.name!r} has no albedo model")
        if params.dim() != 2 or params.shape[1] > self.n_albedo:
            raise ValueError(f"albedo params must be (B, <= {self.n_albedo}), got {tuple(params.shape)}")
        k = params.shape[1]
        basis = self.albedo_basis[:, :, :k]
        return self.albedo_mean + torch.einsum("bk,vck->bvc", params.to(basis.dtype), basis)

    def region(self, name: str) -> torch.Tensor:
        """Vertex ids (K,) int64 of a named region, on the model's device."""
        return torch.from_numpy(self.regions[name]).to(self.faces.device)

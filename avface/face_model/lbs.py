"""Linear blend skinning for FLAME-structured face models, in the style of smplx's ``lbs.py``.

Every function is pure, batched over a leading ``B`` dimension, differentiable, and works in whatever floating
dtype its inputs have (float32 for training, float64 for reference checks). Shapes use these letters:
``B`` batch, ``V`` vertices, ``J`` joints (5 for FLAME: global, neck, jaw, eye_left, eye_right), ``NB`` blendshape
coefficients, ``P = 9 * (J - 1)`` pose-corrective features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "LBSOutput",
    "batch_rodrigues",
    "batch_rigid_transform",
    "blend_shapes",
    "lbs",
    "transform_mat",
    "vertices2joints",
]


def batch_rodrigues(rot_vecs: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Axis-angle vectors to rotation matrices.

    rot_vecs: (N, 3) axis * angle (radians). Returns (N, 3, 3).

    The angle is computed as ``|r + eps|`` (as smplx does) so that the gradient at r = 0 stays finite: a zero pose
    is the most common input (neutral jaw, frontal head) and must not produce NaN gradients.
    """
    n = rot_vecs.shape[0]
    dtype, device = rot_vecs.dtype, rot_vecs.device
    angle = torch.norm(rot_vecs + epsilon, dim=1, keepdim=True)  # (N, 1)
    rot_dir = rot_vecs / angle
    cos = torch.unsqueeze(torch.cos(angle), dim=1)  # (N, 1, 1)
    sin = torch.unsqueeze(torch.sin(angle), dim=1)
    rx, ry, rz = torch.split(rot_dir, 1, dim=1)
    zeros = torch.zeros((n, 1), dtype=dtype, device=device)
    # Cross-product matrix K of the unit axis; R = I + sin K + (1 - cos) K^2.
    K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(n, 3, 3)
    ident = torch.eye(3, dtype=dtype, device=device).unsqueeze(0)
    return ident + sin * K + (1 - cos) * torch.bmm(K, K)


def blend_shapes(betas: torch.Tensor, shape_disps: torch.Tensor) -> torch.Tensor:
    """Per-vertex displacements from blendshape coefficients.

    betas: (B, NB); shape_disps: (V, 3, NB). Returns (B, V, 3) = sum_k betas[:, k] * shape_disps[..., k].
    """
    return torch.einsum("bl,mkl->bmk", betas, shape_disps)


def vertices2joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint locations regressed from vertices.

    J_regressor: (J, V) dense; vertices: (B, V, 3). Returns (B, J, 3).
    """
    return torch.einsum("bik,ji->bjk", vertices, J_regressor)


def transform_mat(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Stack rotations and translations into homogeneous transforms.

    R: (N, 3, 3); t: (N, 3, 1). Returns (N, 4, 4).
    """
    return torch.cat([F.pad(R, [0, 0, 0, 1]), F.pad(t, [0, 0, 0, 1], value=1.0)], dim=2)


def batch_rigid_transform(
    rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics along the kinematic tree.

    rot_mats: (B, J, 3, 3) local rotations; joints: (B, J, 3) rest-pose joint locations; parents: (J,) int64 with
    ``parents[0] == -1`` and ``parents[j] < j`` (topological order, as FLAME's kintree is).

    Returns ``(posed_joints (B, J, 3), rel_transforms (B, J, 4, 4))``. ``rel_transforms[:, j]`` maps a rest-pose
    point to its posed location if it were rigidly attached to joint j (the rest-joint offset is removed, so the
    skinning step can apply the transforms to rest-pose vertices directly).
    """
    joints = torch.unsqueeze(joints, dim=-1)  # (B, J, 3, 1)
    rel_joints = joints.clone()
    # Each joint rotates about its own rest location, expressed relative to its parent.
    rel_joints[:, 1:] = rel_joints[:, 1:] - joints[:, parents[1:]]
    b, j = joints.shape[:2]
    transforms_mat = transform_mat(rot_mats.reshape(-1, 3, 3), rel_joints.reshape(-1, 3, 1)).reshape(b, j, 4, 4)

    chain = [transforms_mat[:, 0]]
    for i in range(1, j):
        chain.append(torch.matmul(chain[int(parents[i])], transforms_mat[:, i]))
    transforms = torch.stack(chain, dim=1)  # (B, J, 4, 4) world transforms of the joint frames

    posed_joints = transforms[:, :, :3, 3]
    # Remove the rest location: T_rel = T_world * [I, -j_rest; 0, 1].
    joints_homogen = F.pad(joints, [0, 0, 0, 1])
    rel_transforms = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0, 0, 0, 0, 0, 0, 0])
    return posed_joints, rel_transforms


@dataclass
class LBSOutput:
    """Result of :func:`lbs`: posed vertices (B, V, 3), posed joints (B, J, 3), rest-pose shaped vertices
    ``v_shaped`` (B, V, 3) (identity + expression, no pose), and the per-joint transforms (B, J, 4, 4)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    v_shaped: torch.Tensor
    transforms: torch.Tensor


def lbs(
    betas: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    J_regressor: torch.Tensor,
    parents: torch.Tensor,
    lbs_weights: torch.Tensor,
) -> LBSOutput:
    """Full FLAME/SMPL skinning pipeline.

    betas: (B, NB) shape and expression coefficients concatenated (FLAME keeps both bases in one tensor);
    pose: (B, J * 3) axis-angle per joint, or (B, J, 3, 3) rotation matrices;
    v_template: (V, 3); shapedirs: (V, 3, NB); posedirs: (P, V * 3) with P = 9 * (J - 1);
    J_regressor: (J, V) dense; parents: (J,) int64; lbs_weights: (V, J).

    Steps: (1) add blendshapes to the template; (2) regress joints from the shaped mesh (so identity moves the
    joints); (3) add pose correctives driven by (R - I) of the non-root joints (zero at rest, so the rest pose is
    exactly the shaped mesh); (4) forward kinematics; (5) blend the joint transforms per vertex.
    """
    b = betas.shape[0]
    device, dtype = betas.device, betas.dtype

    v_shaped = v_template.unsqueeze(0) + blend_shapes(betas, shapedirs)  # (B, V, 3)
    J = vertices2joints(J_regressor, v_shaped)  # (B, J, 3)

    num_joints = J_regressor.shape[0]
    ident = torch.eye(3, dtype=dtype, device=device)
    if pose.dim() == 4:
        rot_mats = pose.reshape(b, -1, 3, 3)
    else:
        rot_mats = batch_rodrigues(pose.reshape(-1, 3)).reshape(b, -1, 3, 3)
    if rot_mats.shape[1] != num_joints:
        raise ValueError(f"pose has {rot_mats.shape[1]} joints, the model has {num_joints}")
    pose_feature = (rot_mats[:, 1:] - ident).reshape(b, -1)  # (B, P)
    pose_offsets = torch.matmul(pose_feature, posedirs).reshape(b, -1, 3)  # (B, V, 3)
    v_posed = v_shaped + pose_offsets

    J_transformed, A = batch_rigid_transform(rot_mats, J, parents)

    # Per-vertex transform = weighted sum of joint transforms (linear blend skinning).
    T = torch.matmul(lbs_weights, A.reshape(b, num_joints, 16)).reshape(b, -1, 4, 4)  # (B, V, 4, 4)
    v_posed_h = F.pad(v_posed, [0, 1], value=1.0)  # (B, V, 4)
    verts = torch.matmul(T, v_posed_h.unsqueeze(-1))[:, :, :3, 0]
    return LBSOutput(vertices=verts, joints=J_transformed, v_shaped=v_shaped, transforms=A)

"""What ``AVFace.forward`` returns: one typed record, every tensor (B, T, ...) with its shape documented here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["AVFaceOutput"]


@dataclass
class AVFaceOutput:
    """Outputs of ``AVFace.forward``. A field is None when the stage or the model's parts do not produce it.

    Shapes: B windows, T frames, V vertices, K lip vertices, S image side, U UV side, NS/NA/NE code sizes.

    Codes (always present):
        shape (B,T,NS), albedo (B,T,NA), light (B,T,9,3) SH coefficients, global_pose (B,T,3) axis-angle,
        cam (B,T,3) orthographic (s, tx, ty), expression (B,T,NE), jaw (B,T,3) axis-angle,
        audio_keep / video_keep (B,T) float, 1 where the modality embedding was kept (validity x dropout).
    Geometry (with a face model):
        vertices (B,T,V,3) (lip-refined from the lip stage on), landmarks3d (B,T,68,3), landmarks2d (B,T,68,2) NDC,
        root (B,T,3) root joint.
    Lip refinement (lip and detail stages):
        lip_offsets (B,T,K,3) canonical-frame offsets (metres), vertices_coarse (B,T,V,3) before refinement.
    Renderings (tag ``coarse`` in the coarse/lip stages, ``detail`` in the detail stage):
        render_* (B,T,3,S,S) in [0,1], alpha_* (B,T,1,S,S), normals_* (B,T,3,S,S) camera-frame normals,
        lip_mask_* / face_mask_* (B,T,1,S,S) pixels of faces touching a lip vertex / inside the face region.
    Fine stage:
        displacement (B,T,1,U,U) metres (D), uv_mask (B,T,1,U,U) texels with a surface, uv_visible (B,T,1,U,U)
        texels seen in the frame (facing the camera, not occluded), uv_normals_detail (B,T,3,U,U),
        uv_positions_detail (B,T,3,U,U) (eq. 2).
    """

    shape: torch.Tensor
    albedo: torch.Tensor
    light: torch.Tensor
    global_pose: torch.Tensor
    cam: torch.Tensor
    expression: torch.Tensor
    jaw: torch.Tensor
    audio_keep: torch.Tensor | None = None
    video_keep: torch.Tensor | None = None
    vertices: torch.Tensor | None = None
    landmarks3d: torch.Tensor | None = None
    landmarks2d: torch.Tensor | None = None
    root: torch.Tensor | None = None
    lip_offsets: torch.Tensor | None = None
    vertices_coarse: torch.Tensor | None = None
    render_coarse: torch.Tensor | None = None
    alpha_coarse: torch.Tensor | None = None
    normals_coarse: torch.Tensor | None = None
    lip_mask_coarse: torch.Tensor | None = None
    face_mask_coarse: torch.Tensor | None = None
    render_detail: torch.Tensor | None = None
    alpha_detail: torch.Tensor | None = None
    normals_detail: torch.Tensor | None = None
    lip_mask_detail: torch.Tensor | None = None
    face_mask_detail: torch.Tensor | None = None
    displacement: torch.Tensor | None = None
    uv_mask: torch.Tensor | None = None
    uv_visible: torch.Tensor | None = None
    uv_normals_detail: torch.Tensor | None = None
    uv_positions_detail: torch.Tensor | None = None

    def replace(self, **fields: torch.Tensor | None) -> AVFaceOutput:
        """A copy with ``fields`` set (unknown names raise TypeError)."""
        return dataclasses.replace(self, **fields)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The present fields by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def detach(self) -> AVFaceOutput:
        return self.replace(**{k: v.detach() for k, v in self.tensors().items()})

"""DECA-like differentiable face renderer: albedo x SH shading, plus depth, normals, UV maps and landmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avface.render.cameras import ImageSize, PerspectiveCamera, image_hw, orthographic_project
from avface.render.rasterizer import Backend, Fragments, interpolate_face_attributes, rasterize
from avface.render.shading import sh_shading, vertex_normals

Camera = torch.Tensor | PerspectiveCamera


@dataclass
class RenderOutput:
    """What :class:`FaceRenderer` returns. Background pixels are 0 in every image-space map (use ``alpha``).

    image: (B, 3, H, W) albedo x shading (composited over ``background`` when one was given).
    alpha: (B, 1, H, W) 1 where a face covers the pixel centre (hard coverage, not differentiable).
    depth: (B, 1, H, W) interpolated projected z (orthographic: s * Z; perspective: -Z_cam), larger is closer.
    normals: (B, 3, H, W) unit normals in the camera frame (+x right, +y up, +z towards the viewer; for the
        orthographic camera this is the model frame).
    landmarks2d: (B, K, 2) NDC of ``landmarks3d`` (None when none were given).
    pix_to_face: (B, H, W) int64 face id in [0, F) of the mesh (not packed), -1 at background.
    shading: (B, 3, H, W) SH irradiance. albedo: (B, 3, H, W) albedo per pixel.
    uv_grid: (B, H, W, 2) each pixel's UV position as a ``grid_sample`` grid into (B, C, U, U) UV maps
        (None when the renderer has no UVs); background pixels hold -2 (outside, samples 0).
    fragments: the rasterizer's output (packed face ids), for further pytorch3d shading.
    """

    image: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    landmarks2d: torch.Tensor | None
    pix_to_face: torch.Tensor
    shading: torch.Tensor
    albedo: torch.Tensor
    uv_grid: torch.Tensor | None
    fragments: Fragments


@dataclass
class UVMaps:
    """UV-space maps (DECA's ``world2uv``); row 0 is v = 1 (top of the texture), column 0 is u = 0.

    position: (B, 3, U, U) model-space positions; normal: (B, 3, U, U) unit normals; mask: (B, 1, U, U) 1 inside
    the UV layout, 0 elsewhere (where position and normal are 0).
    """

    position: torch.Tensor
    normal: torch.Tensor
    mask: torch.Tensor


def _as_long(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long()


def _as_float(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """(..., 2) UV in [0, 1] with v up -> (..., 2) ``grid_sample`` coordinates (x right, y down, [-1, 1])."""
    return torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)


class FaceRenderer(torch.nn.Module):
    """Differentiable renderer for meshes of one topology (FLAME or the starter model).

    Args:
        faces: (F, 3) vertex ids.
        uv_coords: (VT, 2) UV coordinates in [0, 1] (v up), or None for no UV texture / UV maps.
        uv_faces: (F, 3) ids into ``uv_coords`` for each face, or None.
        image_size: int or (H, W) of the rendered images.
        uv_size: side of the UV maps.
        backend: rasterizer backend (see :func:`avface.render.rasterizer.rasterize`).
        cull_backfaces: forwarded to the rasterizer.
    """

    faces: torch.Tensor
    uv_coords: torch.Tensor
    uv_faces: torch.Tensor

    def __init__(
        self,
        faces: torch.Tensor | np.ndarray,
        uv_coords: torch.Tensor | np.ndarray | None = None,
        uv_faces: torch.Tensor | np.ndarray | None = None,
        image_size: ImageSize = 224,
        uv_size: int = 256,
        backend: Backend = "auto",
        cull_backfaces: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("faces", _as_long(faces), persistent=False)
        self.has_uv = uv_coords is not None and uv_faces is not None
        if self.has_uv:
            self.register_buffer("uv_coords", _as_float(uv_coords), persistent=False)
            self.register_buffer("uv_faces", _as_long(uv_faces), persistent=False)
            if self.uv_faces.shape != self.faces.shape:
                raise ValueError(f"uv_faces {tuple(self.uv_faces.shape)} must match faces {tuple(self.faces.shape)}")
        self.image_size = image_hw(image_size)
        self.uv_size = int(uv_size)
        self.backend: Backend = backend
        self.cull_backfaces = cull_backfaces
        # UV-space rasterization does not depend on the vertices: computed once per device and reused.
        self._uv_fragments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------------------------------------ helpers
    def project(self, points: torch.Tensor, cam: Camera) -> torch.Tensor:
        """(B, N, 3) model points -> (B, N, 3) NDC xy (y down) + z (larger closer)."""
        if isinstance(cam, PerspectiveCamera):
            return cam.project(points, self.image_size)
        return orthographic_project(points, cam)

    def _face_attrs(self, per_vertex: torch.Tensor) -> torch.Tensor:
        """(B, V, D) per-vertex attribute -> (B * F, 3, D) per face corner, pytorch3d's packed layout."""
        b, _, d = per_vertex.shape
        return per_vertex.index_select(1, self.faces.reshape(-1)).reshape(b * self.faces.shape[0], 3, d)

    def _uv_face_attrs(self, b: int) -> torch.Tensor:
        """(B * F, 3, 2) UVs per face corner (shared by the batch)."""
        uv = self.uv_coords[self.uv_faces]  # (F, 3, 2)
        return uv[None].expand(b, -1, -1, -1).reshape(b * uv.shape[0], 3, 2)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        vertices: torch.Tensor,
        cam: Camera,
        albedo: torch.Tensor,
        sh: torch.Tensor,
        landmarks3d: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        uv_normals: torch.Tensor | None = None,
    ) -> RenderOutput:
        """Render.

        Args:
            vertices: (B, V, 3) model-space vertices.
            cam: (B, 3) orthographic ``(s, tx, ty)`` or a :class:`PerspectiveCamera`.
            albedo: (B, V, 3) per-vertex albedo, or (B, 3, Hu, Wu) UV texture (needs UVs).
            sh: (B, 9, 3) SH lighting.
            landmarks3d: optional (B, K, 3) model-space landmarks, projected with the same camera.
            background: optional (B, 3, H, W) composited behind the face.
            uv_normals: optional (B, 3, U, U) UV normal map (model frame) replacing the interpolated vertex normals
                for shading and ``normals`` (the detail stage's displaced normals).
        Returns:
            :class:`RenderOutput`.
        """
        b = vertices.shape[0]
        h, w = self.image_size
        verts_ndc = self.project(vertices, cam)
        fragments = rasterize(verts_ndc, self.faces, (h, w), backend=self.backend, cull_backfaces=self.cull_backfaces)
        p2f = fragments.pix_to_face  # (B, H, W, 1) packed
        bary = fragments.bary_coords  # (B, H, W, 1, 3)
        alpha = (p2f[..., 0] >= 0).to(vertices.dtype)[:, None]  # (B, 1, H, W)

        # Interpolate every per-vertex attribute in one pass: channel slices recorded as we stack.
        vn = vertex_normals(vertices, self.faces)  # (B, V, 3) model frame
        attrs = [self._face_attrs(vn)]
        texture = albedo.dim() == 4
        if not texture:
            if albedo.shape[:2] != vertices.shape[:2]:
                raise ValueError(f"per-vertex albedo {tuple(albedo.shape)} does not match vertices")
            attrs.append(self._face_attrs(albedo))
        need_uv = self.has_uv
        if texture and not self.has_uv:
            raise ValueError("a UV texture albedo needs uv_coords and uv_faces")
        if need_uv:
            attrs.append(self._uv_face_attrs(b).to(vertices.dtype))
        face_attrs = torch.cat(attrs, dim=-1)  # (B * F, 3, D)
        pix = interpolate_face_attributes(p2f, bary, face_attrs)[:, :, :, 0]  # (B, H, W, D)
        pix = pix.permute(0, 3, 1, 2)  # (B, D, H, W)

        normals_model = pix[:, 0:3]
        c = 3
        if not texture:
            albedo_img = pix[:, c : c + 3]
            c += 3
        uv_grid = None
        if need_uv:
            uv = pix[:, c : c + 2].permute(0, 2, 3, 1)  # (B, H, W, 2)
            # Background -> far outside the texture so grid_sample returns 0 there.
            uv_grid = torch.where(alpha[:, 0, :, :, None] > 0, uv_to_grid(uv), torch.full_like(uv, -2.0))
        if texture:
            assert uv_grid is not None
            albedo_img = F.grid_sample(albedo, uv_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if uv_normals is not None:
            if uv_grid is None:
                raise ValueError("uv_normals needs uv_coords and uv_faces")
            normals_model = F.grid_sample(uv_normals, uv_grid, mode="bilinear", align_corners=False)
        # Interpolated unit normals are shorter than 1 inside faces: renormalise (background stays 0).
        normals_model = F.normalize(normals_model, dim=1, eps=1e-12)

        shading = sh_shading(normals_model, sh) * alpha
        image = albedo_img * shading
        if background is not None:
            image = image + background * (1.0 - alpha)

        if isinstance(cam, PerspectiveCamera):
            n = normals_model.permute(0, 2, 3, 1).reshape(b, h * w, 3)
            normals_cam = cam.rotate_normals(n).reshape(b, h, w, 3).permute(0, 3, 1, 2)
        else:
            normals_cam = normals_model
        depth = torch.where(alpha > 0, fragments.zbuf.permute(0, 3, 1, 2), torch.zeros_like(alpha))

        landmarks2d = None
        if landmarks3d is not None:
            landmarks2d = self.project(landmarks3d, cam)[..., :2]
        n_faces = self.faces.shape[0]
        p2f_local = torch.where(p2f[..., 0] >= 0, p2f[..., 0] % n_faces, p2f[..., 0])
        return RenderOutput(
            image=image,
            alpha=alpha,
            depth=depth,
            normals=normals_cam,
            landmarks2d=landmarks2d,
            pix_to_face=p2f_local,
            shading=shading,
            albedo=albedo_img,
            uv_grid=uv_grid,
            fragments=fragments,
        )

    # ------------------------------------------------------------------------------------------------ UV maps
    def _uv_raster(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, U, U, 1) face ids and (1, U, U, 1, 3) barycentrics of the UV layout, cached per device."""
        key = str(device)
        if key not in self._uv_fragments:
            uv = self.uv_coords.to(device)
            # UV layouts do not overlap, so a constant depth is fine.
            verts = torch.cat([uv_to_grid(uv), torch.zeros_like(uv[:, :1])], dim=-1)[None]  # (1, VT, 3)
            with torch.no_grad():
                frags = rasterize(verts, self.uv_faces.to(device), self.uv_size, backend=self.backend)
            self._uv_fragments[key] = (frags.pix_to_face, frags.bary_coords)
        return self._uv_fragments[key]

    def uv_maps(self, vertices: torch.Tensor) -> UVMaps:
        """Rasterize per-vertex positions and normals into UV space (DECA's ``world2uv``).

        Args:
            vertices: (B, V, 3) model-space vertices.
        Returns:
            :class:`UVMaps` with (B, 3, U, U) position and normal maps and a (B, 1, U, U) mask.
        """
        if not self.has_uv:
            raise ValueError("uv_maps needs uv_coords and uv_faces")
        b = vertices.shape[0]
        n_faces = self.faces.shape[0]
        p2f1, bary1 = self._uv_raster(vertices.device)
        # Repack the single UV rasterization for B meshes: face f of mesh i is packed id i * F + f.
        offs = (torch.arange(b, device=vertices.device) * n_faces).view(b, 1, 1, 1)
        p2f = torch.where(p2f1 >= 0, p2f1 + offs, p2f1.expand(b, -1, -1, -1))
        bary = bary1.expand(b, -1, -1, -1, -1).to(vertices.dtype)
        vn = vertex_normals(vertices, self.faces)
        attrs = torch.cat([self._face_attrs(vertices), self._face_attrs(vn)], dim=-1)
        pix = interpolate_face_attributes(p2f, bary, attrs)[:, :, :, 0].permute(0, 3, 1, 2)  # (B, 6, U, U)
        mask = (p2f[..., 0] >= 0).to(vertices.dtype)[:, None]
        return UVMaps(position=pix[:, 0:3], normal=F.normalize(pix[:, 3:6], dim=1, eps=1e-12), mask=mask)

"""Camera projections into the project's NDC (see docs/ARCHITECTURE.md, "Conventions").

NDC here: x in [-1, 1] left to right, y in [-1, 1] top to bottom; pixel coordinates ``u = (x + 1) * W / 2``,
``v = (y + 1) * H / 2`` with the centre of pixel column ``c`` at ``u = c + 0.5``. Every projection returns a
third channel ``z`` where **larger z is closer to the camera**; the rasterizer uses it for visibility.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ImageSize = int | tuple[int, int]


def image_hw(image_size: ImageSize) -> tuple[int, int]:
    """``image_size`` (an int for square images or ``(H, W)``) -> ``(H, W)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def orthographic_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's orthographic camera.

    Args:
        points: (B, N, 3) model-space points (metres, +y up, +z towards the viewer).
        cam: (B, 3) ``(s, tx, ty)``.
    Returns:
        (B, N, 3): ``x = s (X + tx)``, ``y = -s (Y + ty)`` (NDC, y down), ``z = s Z`` (larger is closer).
        z is scaled by s as in DECA's ``batch_orth_proj`` so depth keeps the units of the image plane.
    """
    s = cam[:, None, 0:1]
    x = s * (points[..., 0:1] + cam[:, None, 1:2])
    y = -s * (points[..., 1:2] + cam[:, None, 2:3])
    z = s * points[..., 2:3]
    return torch.cat([x, y, z], dim=-1)


def fit_orthographic_camera(points: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                            ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares re-fit of a rotation and DECA's orthographic camera to 2D correspondences:
    ``orthographic_project(points @ R^T, cam)[..., :2] ~ target``.

    The weak-perspective fit of 3DDFA's ``P2sRt``: a weighted affine fit ``u ~ M X + t`` (M 2x3) in y-up image
    coordinates, M replaced by its nearest scaled pair of orthonormal rows (SVD; scale = mean singular value),
    the third row their cross product (a proper rotation), the translation re-solved for that M.

    Args:
        points: (B, N, 3) model-space points (e.g. landmarks of the posed mesh).
        target: (B, N, 2) their NDC positions in the image (y down).
        weights: (B, N) or (N,) non-negative point weights; None = all 1.
        ridge: Tikhonov term on the affine fit, relative to the points' spread (nearly planar point sets).
    Returns:
        rotation (B, 3, 3) to apply to the points (``points @ R^T``) and cam (B, 3) ``(s, tx, ty)``.
    """
    b, n, _ = points.shape
    w = points.new_ones(b, n) if weights is None else weights.to(points).expand(b, n)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    u = target * target.new_tensor([1.0, -1.0])  # y up, as the model space
    x_mean = (w[..., None] * points).sum(1, keepdim=True)
    u_mean = (w[..., None] * u).sum(1, keepdim=True)
    p, q = points - x_mean, u - u_mean  # (B, N, 3), (B, N, 2)
    ptp = torch.einsum("bn,bni,bnj->bij", w, p, p)
    ptp = ptp + ridge * ptp.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] * torch.eye(3).to(ptp)
    qtp = torch.einsum("bn,bni,bnj->bij", w, q, p)  # (B, 2, 3)
    m = torch.linalg.solve(ptp, qtp.transpose(1, 2)).transpose(1, 2)  # (B, 2, 3) = qtp ptp^-1
    uu, sv, vh = torch.linalg.svd(m, full_matrices=False)  # (B,2,2), (B,2), (B,2,3)
    rows = uu @ vh  # (B, 2, 3) orthonormal rows
    rotation = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)
    s = sv.mean(-1)  # (B,)
    t = u_mean[:, 0] - s[:, None] * torch.einsum("bij,bj->bi", rows, x_mean[:, 0])  # (B, 2)
    return rotation, torch.stack([s, t[:, 0] / s, t[:, 1] / s], dim=-1)


def perspective_project(
    points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, image_size: ImageSize
) -> torch.Tensor:
    """Pinhole camera in the OpenCV convention (camera x right, y down, z forward; K in pixels with integer
    pixel centres, as Multiface's KRT files and OpenCV calibrations use).

    Args:
        points: (B, N, 3) world points. K: (B, 3, 3). R: (B, 3, 3) world->camera rotation. t: (B, 3).
        image_size: int or (H, W) of the image K refers to.
    Returns:
        (B, N, 3): NDC xy and ``z = -Z_cam`` (larger is closer, so the rasterizer treats both cameras alike).
        The 0.5 shift converts OpenCV's integer pixel centres to ours (centre of column c at u = c + 0.5).
    """
    h, w = image_hw(image_size)
    pc = torch.einsum("bij,bnj->bni", R, points) + t[:, None, :]
    z = pc[..., 2:3]
    # Guard the division only for points at/behind the camera centre; they are culled by the caller anyway.
    zs = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    uv = torch.einsum("bij,bnj->bni", K[:, :2, :2], pc[..., :2] / zs) + K[:, None, :2, 2]
    u = uv[..., 0:1] + 0.5
    v = uv[..., 1:2] + 0.5
    return torch.cat([2.0 * u / w - 1.0, 2.0 * v / h - 1.0, -z], dim=-1)


def ndc_to_pixels(xy: torch.Tensor, image_size: ImageSize) -> torch.Tensor:
    """(..., 2) NDC -> (..., 2) pixel coordinates ``(u, v)``; pixel (c, r) has its centre at (c + 0.5, r + 0.5)."""
    h, w = image_hw(image_size)
    scale = xy.new_tensor([w / 2.0, h / 2.0])
    return (xy[..., :2] + 1.0) * scale


def pixels_to_ndc(uv: torch.Tensor, image_size: ImageSize) -> torch.Tensor:
    """Inverse of :func:`ndc_to_pixels`: (..., 2) pixels -> (..., 2) NDC."""
    h, w = image_hw(image_size)
    scale = uv.new_tensor([2.0 / w, 2.0 / h])
    return uv[..., :2] * scale - 1.0


@dataclass
class PerspectiveCamera:
    """A batched pinhole camera (OpenCV convention) that :class:`FaceRenderer` accepts in place of ``cam (B, 3)``.

    K: (B, 3, 3) intrinsics in pixels of an image of ``image_size``; R: (B, 3, 3); t: (B, 3).
    ``image_size`` None means K refers to the renderer's own image size.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: ImageSize | None = None

    def project(self, points: torch.Tensor, image_size: ImageSize) -> torch.Tensor:
        """(B, N, 3) world points -> (B, N, 3) NDC xy + z (larger closer)."""
        return perspective_project(points, self.K, self.R, self.t, self.image_size or image_size)

    def rotate_normals(self, normals: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) world normals -> camera-frame normals with +x right, +y up, +z towards the viewer
        (OpenCV's y and z flipped), the frame the orthographic camera's normals already live in."""
        n = torch.einsum("bij,bnj->bni", self.R, normals)
        return n * n.new_tensor([1.0, -1.0, -1.0])

"""Spherical-harmonics shading (DECA's 9-band irradiance model) and vertex normals."""

from __future__ import annotations

import math

import torch

# DECA's constants (decalib/utils/renderer.py, ``constant_factor``): the SH basis normalisation times the
# Lambertian convolution factors (pi, 2pi/3, pi/4) of bands 0, 1, 2, so ``sh`` directly gives irradiance.
_PI = math.pi
SH_CONSTANTS: tuple[float, ...] = (
    1.0 / math.sqrt(4 * _PI),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (3 / 2) * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (1 / 2) * math.sqrt(5 / (4 * _PI)),
)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """DECA's 9 SH basis functions (with its constants) of unit normals.

    Args:
        normals: (B, 3, H, W) (or (B, 3, N)) unit normals.
    Returns:
        (B, 9, H, W) (or (B, 9, N)) in DECA's order: 1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1.
    """
    x, y, z = normals[:, 0], normals[:, 1], normals[:, 2]
    basis = torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0], dim=1)
    const = normals.new_tensor(SH_CONSTANTS).view(1, 9, *([1] * (normals.dim() - 2)))
    return basis * const


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Irradiance per pixel from SH lighting.

    Args:
        normals: (B, 3, H, W) unit normals (model/world frame, as DECA shades).
        sh: (B, 9, 3) SH coefficients x RGB.
    Returns:
        (B, 3, H, W) shading; multiply by albedo to get the image.
    """
    return torch.einsum("bkhw,bkc->bchw", sh_basis(normals), sh)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (the sum of unnormalised face normals at each vertex), as DECA and
    pytorch3d compute them; outward for faces counter-clockwise seen from outside (FLAME's winding).

    Args:
        vertices: (B, V, 3). faces: (F, 3) int64.
    Returns:
        (B, V, 3) unit normals (zero vectors stay ~zero for unreferenced vertices).
    """
    v0, v1, v2 = (vertices.index_select(1, faces[:, k]) for k in range(3))  # (B, F, 3) each
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3)
    vn = torch.zeros_like(vertices)
    for k in range(3):
        vn = vn.index_add(1, faces[:, k], fn)
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)

"""Losses over images and maps: photometric, Laplacian normals (eq. 1, 3), soft symmetry, ||D||_1, and the
coefficient regularisers and shape consistency of L_coarse. Pure functions over tensors.

Norm convention: the paper writes ||.||_{1,1} (entry-wise L1); we use the mean over the (masked) entries so the
loss does not scale with resolution; the lambdas of the paper multiply these means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avface.losses.reduction import masked_mean

LAPLACIAN_KERNEL = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def image_laplacian(x: torch.Tensor) -> torch.Tensor:
    """Discrete Laplacian (3x3 kernel [[0,1,0],[1,-4,1],[0,1,0]]) per channel, replicate padding: (N,C,H,W)."""
    c = x.shape[1]
    k = LAPLACIAN_KERNEL.to(x)[None, None].expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def laplacian_normals_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                           erode: bool = True) -> torch.Tensor:
    """|| Lap(pred) - Lap(target) ||_1 over a region: eq. (1) with the lip mask, eq. (3) with the face mask.

    pred, target (N,3,H,W) normal maps; mask (N,1,H,W) in {0,1}. With ``erode`` the mask is eroded by one pixel
    so the Laplacian stencil never straddles the region border (where the rendered normals stop).
    """
    if mask is not None and erode:
        mask = -F.max_pool2d(-mask.to(pred), 3, 1, 1)
    return masked_mean((image_laplacian(pred) - image_laplacian(target)).abs(), mask)


def photometric_loss(rendered: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked L1 photometric loss (DECA: mean over the face mask of |I - R|, channels summed).

    rendered, image (N,3,H,W) in [0,1]; mask (N,1,H,W) (face region x visibility x not-occluded).
    """
    err = (rendered - image).abs().sum(1, keepdim=True)
    return masked_mean(err, mask)


def symmetry_loss(displacement: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Soft symmetry (DECA): || M * (D - flip_u(D)) ||_1 on the UV displacement map (N,1,U,U). The UV layout is
    left-right symmetric about its vertical centre line; ``mask`` (N,1,U,U) = visible face region."""
    return masked_mean((displacement - displacement.flip(-1)).abs(), mask)


def displacement_l1(displacement: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_reg = ||D||_1 (mean absolute displacement over the UV face region)."""
    return masked_mean(displacement.abs(), mask)


def coefficient_regularizer(code: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of a coefficient vector (..., K), averaged over the leading dims (DECA's ||beta||^2)."""
    return code.square().sum(-1).mean()


def shape_consistency_loss(shape: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
    """Shape consistency across frames of one identity: mean squared deviation of each frame's shape code from
    the mean shape of its identity.

    shape (B,T,K): frames of a window share an identity; ``identity`` (B,) integer labels additionally pool
    windows of the same person in a batch. (DECA's version swaps shape codes between images of one identity and
    re-renders; this is the code-space form, which needs no renderer and is what "consistency" asks.)
    """
    b, t, k = shape.shape
    if identity is None:
        mean = shape.mean(dim=1, keepdim=True)
        return (shape - mean).square().sum(-1).mean()
    ids, inv = torch.unique(identity, return_inverse=True)
    flat = shape.reshape(b * t, k)
    lab = inv.repeat_interleave(t)
    sums = torch.zeros(len(ids), k, dtype=shape.dtype, device=shape.device).index_add_(0, lab, flat)
    counts = torch.bincount(lab, minlength=len(ids)).to(shape)[:, None]
    mean = sums / counts
    return (flat - mean[lab]).square().sum(-1).mean()

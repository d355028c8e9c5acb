"""Losses over images and maps: photometric, Laplacian normals (eq. 1, 3), soft symmetry, ||D||_1, and the
coefficient / lighting regularisers and shape consistency of L_coarse. Pure functions over tensors.

Each term follows the definition of the work the paper defers to (DECA, Feng et al. 2021, for every L_coarse
term, the symmetry and the regularisers); where DECA sums over its batch, the term here is a mean over frames so
it does not change with the batch size (see avface/models/README.md, "Loss terms"). The paper's ||.||_{1,1} is
a mean over the (masked) entries, so no loss scales with resolution.
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
                           erode: bool = True, defined: torch.Tensor | None = None) -> torch.Tensor:
    """|| Lap(pred) - Lap(target) ||_1 over a region: eq. (1) with the lip mask, eq. (3) with the face mask.

    pred, target (N,3,H,W) normal maps; mask (N,1,H,W) in [0,1], the region. The 3x3 stencil must not read
    pixels where a normal map stops (the rendered face's silhouette): with ``defined`` (N,1,H,W), where both maps
    are defined, the region is cut to the pixels whose whole stencil lies in ``defined`` (its one-pixel erosion).
    Without it the region is itself where the normals are defined (the face) and, with ``erode``, is eroded.
    Eroding the lip region instead would be wrong: the skin around the lips has normals, and at 64 px the lips
    are a ring 2-3 px thick, so its erosion keeps about a tenth of them.
    """
    if defined is not None:
        inner = -F.max_pool2d(-defined.to(pred), 3, 1, 1)
        mask = inner if mask is None else mask.to(pred) * inner
    elif mask is not None and erode:
        mask = -F.max_pool2d(-mask.to(pred), 3, 1, 1)
    return masked_mean((image_laplacian(pred) - image_laplacian(target)).abs(), mask)


def lowpass_normals_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                         defined: torch.Tensor) -> torch.Tensor:
    """|| B(pred) - B(target) ||_1 over a region, B a 5x5 binomial blur (sigma 1 px): the lip stage's normals term
    at low resolution (``LossWeights.lip_normals = "lowpass"``).

    Why not eq. (1)'s Laplacian there: at 64 px the lips are a ring 2-3 px thick, and a map that is off by a pixel
    (the coarse stage's pose and shape error) has a Laplacian difference larger than the lips' own shape makes. On
    the synthetic corpus the Laplacian term is lower for the coarse lips than for the same lips with their true
    detail added; the blurred maps rank the true detail first (models README, "lip stage").

    pred, target (N,3,H,W) normal maps; mask (N,1,H,W) the region (dilated by the blur's reach); defined (N,1,H,W)
    where both maps are defined (both are blurred with the same mask, so a silhouette weighs both alike).
    """
    d = defined.to(pred)
    k = pred.new_tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None]) / 256.0
    c = pred.shape[1]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, k[None, None].expand(c, 1, 5, 5), padding=2, groups=c)

    region = F.max_pool2d(mask.to(pred) * d, 5, 1, 2)
    return masked_mean((blur(pred * d) - blur(target * d)).abs(), region)


def photometric_loss(rendered: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked L1 photometric loss as DECA's ``(mask * |R - I|).mean()``: the mean over every pixel and channel
    (masked-out pixels count as zeros, so a smaller face region weighs less, as in DECA).

    rendered, image (N,3,H,W) in [0,1]; mask (N,1,H,W) (face region x visibility x not-occluded).
    """
    err = (rendered - image).abs()
    return err.mean() if mask is None else (mask.to(err) * err).mean()


def symmetry_loss(displacement: torch.Tensor, nonvisible: torch.Tensor | None = None,
                  region: torch.Tensor | None = None) -> torch.Tensor:
    """Soft symmetry (DECA's ``reg_sym``): ``nonvis_mask * |D - flip_u(D).detach()|`` on the UV displacement map
    (N,1,U,U): texels the image does not show copy their mirror texel, never the other way round (the flipped map
    is a fixed target). The UV layout is left-right symmetric about its vertical centre line.

    ``nonvisible`` (N,1,U,U): the non-visible texels (DECA: 1 - erode(visible)); None = all. DECA sums over the
    texels and divides by the batch size; the sum is divided here by the number of ``region`` texels (the UV
    layout, (N,1,U,U); None = all texels), so the term keeps DECA's proportion to the hidden area but does not
    scale with U^2.
    """
    err = (displacement - displacement.flip(-1).detach()).abs()
    if nonvisible is not None:
        err = err * nonvisible.to(err)
    denom = region.to(err).sum() if region is not None else err.new_tensor(float(err.numel()))
    return err.sum() / denom.clamp_min(1.0)


def nonvisible_region(visible: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """DECA's ``1 - binary_erosion(uv_vis_mask)`` (3x3 erosion), restricted to ``region``: (N,1,U,U) float."""
    dtype = visible.dtype if visible.is_floating_point() else torch.float32
    eroded = -F.max_pool2d(-(visible > 0.5).to(dtype), 3, 1, 1)
    nonvis = 1.0 - eroded
    return nonvis if region is None else nonvis * (region > 0.5).to(nonvis)


def displacement_l1(displacement: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_reg = ||D||_1 (DECA's ``reg_z``: mean |D|), here the mean over the UV face region ``mask`` (N,1,U,U)."""
    return masked_mean(displacement.abs(), mask)


def coefficient_regularizer(code: torch.Tensor) -> torch.Tensor:
    """DECA's coefficient regulariser ``sum(code**2) / 2`` per frame, averaged over the leading dims: code (..., K).

    DECA sums over its batch; the caller multiplies this per-frame mean by a fixed frame count
    (``LossWeights.regularizer_batch_frames``) to keep DECA's strength at that batch size, batch-size invariant.
    """
    return (code.square().sum(-1) / 2.0).mean()


def light_regularizer(light: torch.Tensor) -> torch.Tensor:
    """DECA's lighting regulariser ``((light.mean(RGB) - light)**2).mean()``: SH coefficients (..., 9, 3) pulled
    towards white light (equal in R, G, B)."""
    return (light.mean(dim=-1, keepdim=True) - light).square().mean()


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

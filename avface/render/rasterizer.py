"""Mesh rasterization with a pytorch3d-compatible output (``Fragments``), one face per pixel, no blur.

Two backends, same contract:

* ``"pytorch3d"``: pytorch3d's ``rasterize_meshes`` (its CUDA kernels on GPU). Vertices are converted to
  pytorch3d's NDC (+X left, +Y up, z into the screen) and back.
* ``"zbuffer"``: a vectorised z-buffer in plain torch for the CPU, whose cost grows with pixels plus the area
  of the triangles' bounding boxes instead of pixels x faces (pytorch3d's CPU kernel tests every face at every
  pixel: ~1 s per 224x224 frame for FLAME's 9,976 faces). Visibility is computed without gradients; the
  barycentrics are then recomputed in closed form from ``pix_to_face`` and the (differentiable) vertex positions,
  so gradients reach the vertices exactly as through pytorch3d's rasterizer (d bary / d verts at fixed faces).

Conventions (docs/ARCHITECTURE.md): input ``verts_ndc (B, V, 3)`` has x in [-1, 1] left to right, y in [-1, 1]
top to bottom, the centre of pixel column c at x = (2c + 1) / W - 1, and z with **larger z closer** (the output
of :mod:`avface.render.cameras`). ``pix_to_face`` holds *packed* face ids ``b * F + f`` (pytorch3d's convention,
so ``interpolate_face_attributes`` with ``(B * F, 3, D)`` attributes works) and -1 for background.
``zbuf`` holds the interpolated input z (larger closer) and -1 at background pixels: mask it with
``pix_to_face >= 0``. ``bary_coords`` are -1 at background. ``dists`` is the signed squared distance (NDC units)
from the pixel centre to the face's nearest edge, negative inside (pytorch3d's meaning), not differentiable.
"""

from __future__ import annotations

from typing import Literal

import torch
from pytorch3d.renderer.mesh.rasterizer import Fragments

from avface.render.cameras import ImageSize, image_hw

Backend = Literal["auto", "pytorch3d", "zbuffer"]

# pytorch3d skips faces whose signed NDC area is within this of zero; we do the same so both backends agree.
_AREA_EPS = 1e-8
# Upper bound on (triangle, pixel) candidate pairs expanded at once: bounds the z-buffer's peak memory
# (about 100 bytes per candidate) to a few hundred MB whatever the mesh and image size.
DEFAULT_MAX_CANDIDATES = 1 << 22

__all__ = ["Fragments", "rasterize", "rasterize_pytorch3d", "rasterize_zbuffer", "zbuffer_visibility"]


def rasterize(
    verts_ndc: torch.Tensor,
    faces: torch.Tensor,
    image_size: ImageSize,
    backend: Backend = "auto",
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterize a batch of meshes that share one topology.

    Args:
        verts_ndc: (B, V, 3) NDC xy (y down) + z (larger closer); may require grad.
        faces: (F, 3) int64 vertex ids, shared by the batch.
        image_size: int or (H, W).
        backend: "auto" = pytorch3d on CUDA tensors, our z-buffer on CPU.
        cull_backfaces: skip faces whose NDC winding is clockwise on screen (for a mesh whose faces are
            counter-clockwise seen from outside, as FLAME's, those are the faces turned away from an orthographic
            or OpenCV camera). Off by default, like pytorch3d.
    Returns:
        ``Fragments(pix_to_face (B,H,W,1) int64, zbuf (B,H,W,1), bary_coords (B,H,W,1,3), dists (B,H,W,1))``.
    """
    if backend == "auto":
        backend = "pytorch3d" if verts_ndc.is_cuda else "zbuffer"
    if backend == "pytorch3d":
        return rasterize_pytorch3d(verts_ndc, faces, image_size, cull_backfaces=cull_backfaces)
    if backend == "zbuffer":
        return rasterize_zbuffer(verts_ndc, faces, image_size, cull_backfaces=cull_backfaces)
    raise ValueError(f"unknown rasterizer backend {backend!r}")


# ----------------------------------------------------------------------------------------------- pytorch3d backend
def _ndc_scale(h: int, w: int) -> tuple[float, float]:
    """pytorch3d's NDC spans [-1, 1] on the shorter side and [-L/S, L/S] on the longer one; ours spans [-1, 1] on
    both, so x_p3d = -x * W / min(H, W) and y_p3d = -y * H / min(H, W) (the minus: +X left, +Y up)."""
    m = float(min(h, w))
    return w / m, h / m


def rasterize_pytorch3d(
    verts_ndc: torch.Tensor, faces: torch.Tensor, image_size: ImageSize, cull_backfaces: bool = False
) -> Fragments:
    """pytorch3d's rasterizer on our NDC; same arguments and output as :func:`rasterize`."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    h, w = image_hw(image_size)
    b = verts_ndc.shape[0]
    sx, sy = _ndc_scale(h, w)
    # pytorch3d ignores points with z < 0 (behind its camera) and keeps the smallest z: map our "larger is closer"
    # z to a positive distance with a constant offset, and undo it on zbuf below.
    offset = verts_ndc[..., 2].detach().amax() + 1.0
    v3 = torch.stack([-sx * verts_ndc[..., 0], -sy * verts_ndc[..., 1], offset - verts_ndc[..., 2]], dim=-1)
    meshes = Meshes(verts=v3, faces=faces[None].expand(b, -1, -1))
    n_faces = faces.shape[0]
    pix_to_face, zbuf, bary, dists = rasterize_meshes(
        meshes,
        image_size=(h, w),
        blur_radius=0.0,
        faces_per_pixel=1,
        # Coarse-to-fine on GPU with room for every face in a bin, so no face is ever dropped for overflow;
        # naive on CPU (coarse-to-fine is no faster there).
        bin_size=None if verts_ndc.is_cuda else 0,
        max_faces_per_bin=max(n_faces, 1) if verts_ndc.is_cuda else None,
        perspective_correct=False,
        cull_backfaces=cull_backfaces,
    )
    zbuf = torch.where(pix_to_face >= 0, offset - zbuf, torch.full_like(zbuf, -1.0))
    return Fragments(pix_to_face=pix_to_face, zbuf=zbuf, bary_coords=bary, dists=dists)


# ------------------------------------------------------------------------------------------------- z-buffer backend
def _screen_vertices(verts_ndc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, V, 3) NDC -> (B, V, 3) pixel coordinates (u, v) with pixel centres at +0.5, z unchanged."""
    scale = verts_ndc.new_tensor([w / 2.0, h / 2.0, 1.0])
    shift = verts_ndc.new_tensor([w / 2.0, h / 2.0, 0.0])
    return verts_ndc * scale + shift


@torch.no_grad()
def zbuffer_visibility(
    verts_px: torch.Tensor,
    faces: torch.Tensor,
    h: int,
    w: int,
    cull_backfaces: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> torch.Tensor:
    """Visible face per pixel by a vectorised z-buffer (no gradients).

    Every triangle's pixel bounding box is expanded into (triangle, pixel) candidate pairs with
    ``repeat_interleave``; an edge-function test keeps the pixel centres strictly inside (pytorch3d's rule), the
    depth there is interpolated, ``scatter_reduce(amax)`` keeps the closest depth per pixel and, among the
    candidates at that depth, the smallest face id wins (pytorch3d's tie rule). Work is proportional to the summed
    bounding-box area, not to pixels x faces.

    Args:
        verts_px: (B, V, 3) pixel coordinates u, v (pixel (c, r) centred at (c + 0.5, r + 0.5)) and z (larger closer).
        faces: (F, 3) int64.
        h, w: image size.
        max_candidates: candidate pairs processed per chunk of faces (memory bound).
    Returns:
        (B, H, W) int64 packed face ids ``b * F + f``, -1 where no face covers the pixel centre.
    """
    device = verts_px.device
    bsz, n_verts, _ = verts_px.shape
    n_faces = faces.shape[0]
    # (T, 3, 3) with T = B * F triangles, in float32 whatever the input (the test is on pixel-sized numbers).
    tri = verts_px.float()[:, faces].reshape(bsz * n_faces, 3, 3)
    x0, y0, z0 = tri[:, 0].unbind(-1)
    x1, y1, z1 = tri[:, 1].unbind(-1)
    x2, y2, z2 = tri[:, 2].unbind(-1)
    # pytorch3d's face area, EdgeFunction(v0; v1, v2), in its NDC: the flip of both axes preserves orientation,
    # so its sign equals ours; magnitude rescaled from pixels^2 to NDC^2 for the degenerate-face threshold.
    area = (x0 - x1) * (y2 - y1) - (y0 - y1) * (x2 - x1)
    area_ndc = area * (4.0 / (h * w))
    valid = area_ndc.abs() > _AREA_EPS
    if cull_backfaces:
        valid &= area_ndc > 0
    valid &= torch.isfinite(tri).all(dim=2).all(dim=1)

    # Pixel index range whose centres fall inside the bounding box: c + 0.5 in [min, max].
    xs = tri[:, :, 0]
    ys = tri[:, :, 1]
    cmin = torch.ceil(xs.amin(1) - 0.5).clamp(min=0)
    cmax = torch.floor(xs.amax(1) - 0.5).clamp(max=w - 1)
    rmin = torch.ceil(ys.amin(1) - 0.5).clamp(min=0)
    rmax = torch.floor(ys.amax(1) - 0.5).clamp(max=h - 1)
    ncol = (cmax - cmin + 1).clamp(min=0)
    nrow = (rmax - rmin + 1).clamp(min=0)
    ncol = torch.where(valid, ncol, torch.zeros_like(ncol)).long()
    nrow = torch.where(valid, nrow, torch.zeros_like(nrow)).long()
    counts = ncol * nrow
    keep = torch.nonzero(counts > 0).squeeze(1)  # triangles that can cover a pixel centre
    if keep.numel() == 0:
        return torch.full((bsz, h, w), -1, dtype=torch.long, device=device)

    # Barycentrics and depth are affine in the pixel position: w_i(p) = a_i px + b_i py + c_i, z likewise.
    # Precompute the 12 coefficients per triangle so each candidate costs one gather and a few FMAs.
    inv = 1.0 / area[keep]
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = (t[keep] for t in (x0, y0, z0, x1, y1, z1, x2, y2, z2))
    # w0 = EdgeFunction(p; v1, v2) / area: (p.x - x1)(y2 - y1) - (p.y - y1)(x2 - x1), etc. (pytorch3d's order).
    a0, b0 = (y2 - y1) * inv, -(x2 - x1) * inv
    c0 = -(x1 * (y2 - y1) - y1 * (x2 - x1)) * inv
    a1, b1 = (y0 - y2) * inv, -(x0 - x2) * inv
    c1 = -(x2 * (y0 - y2) - y2 * (x0 - x2)) * inv
    a2, b2 = (y1 - y0) * inv, -(x1 - x0) * inv
    c2 = -(x0 * (y1 - y0) - y0 * (x1 - x0)) * inv
    az = a0 * z0 + a1 * z1 + a2 * z2
    bz = b0 * z0 + b1 * z1 + b2 * z2
    cz = c0 * z0 + c1 * z1 + c2 * z2
    coef_a = torch.stack([a0, a1, a2, az], 1)  # (T', 4)
    coef_b = torch.stack([b0, b1, b2, bz], 1)
    coef_c = torch.stack([c0, c1, c2, cz], 1)
    cmin_k, rmin_k, ncol_k, counts_k = cmin[keep].long(), rmin[keep].long(), ncol[keep], counts[keep]
    # Packed face id and the batch element's first pixel, per kept triangle.
    face_id = keep
    pix_base = (keep // n_faces) * (h * w)

    # Chunk the kept triangles so that no chunk expands to more than max_candidates pairs (one huge triangle
    # still forms its own chunk).
    csum = torch.cumsum(counts_k, 0)
    total = int(csum[-1])
    n_chunks = max(1, -(-total // max_candidates))
    bounds = torch.searchsorted(csum, torch.arange(1, n_chunks, device=device) * max_candidates, right=True)
    edges = [0, *[int(e) for e in bounds.tolist()], keep.numel()]

    hits_pix: list[torch.Tensor] = []
    hits_z: list[torch.Tensor] = []
    hits_face: list[torch.Tensor] = []
    for s, e in zip(edges[:-1], edges[1:], strict=True):
        if e <= s:
            continue
        cnt = counts_k[s:e]
        n = int(cnt.sum())
        if n == 0:
            continue
        # Candidate -> local triangle id, and its offset inside that triangle's bounding box.
        t_idx = torch.repeat_interleave(torch.arange(s, e, device=device), cnt, output_size=n)
        start = torch.cumsum(cnt, 0) - cnt  # (e - s,)
        off = torch.arange(n, device=device) - torch.repeat_interleave(start, cnt, output_size=n)
        nc = ncol_k[t_idx]
        row_off = torch.div(off, nc, rounding_mode="floor")
        col = cmin_k[t_idx] + (off - row_off * nc)
        row = rmin_k[t_idx] + row_off
        px = (col.float() + 0.5)[:, None]
        py = (row.float() + 0.5)[:, None]
        vals = torch.addcmul(torch.addcmul(coef_c[t_idx], coef_a[t_idx], px), coef_b[t_idx], py)  # (n, 4)
        inside = (vals[:, :3] > 0).all(dim=1)
        sel = torch.nonzero(inside).squeeze(1)
        t_sel = t_idx[sel]
        hits_pix.append(pix_base[t_sel] + row[sel] * w + col[sel])
        hits_z.append(vals[sel, 3])
        hits_face.append(face_id[t_sel])

    pix_to_face = torch.full((bsz * h * w,), -1, dtype=torch.long, device=device)
    if not hits_pix:
        return pix_to_face.view(bsz, h, w)
    pix = torch.cat(hits_pix)
    z = torch.cat(hits_z)
    fid = torch.cat(hits_face)
    if pix.numel() == 0:
        return pix_to_face.view(bsz, h, w)
    # Closest depth per pixel, then the smallest face id among the candidates at that depth.
    zbest = torch.full((bsz * h * w,), float("-inf"), device=device).scatter_reduce(0, pix, z, reduce="amax")
    win = torch.nonzero(z >= zbest[pix]).squeeze(1)
    big = torch.iinfo(torch.long).max
    best = torch.full((bsz * h * w,), big, dtype=torch.long, device=device)
    best.scatter_reduce_(0, pix[win], fid[win], reduce="amin")
    pix_to_face = torch.where(best == big, pix_to_face, best)
    return pix_to_face.view(bsz, h, w)


def barycentrics_from_pix_to_face(
    verts_px: torch.Tensor, faces: torch.Tensor, pix_to_face: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics, depth and edge distances of the given visible faces, in closed form.

    Args:
        verts_px: (B, V, 3) pixel coordinates + z (may require grad).
        faces: (F, 3) int64.
        pix_to_face: (B, H, W) packed face ids, -1 background.
    Returns:
        bary (B, H, W, 3) (-1 at background), zbuf (B, H, W) (-1 at background), dists (B, H, W) signed squared
        distance in NDC units (no grad; -1 at background as in pytorch3d).
    """
    bsz, n_verts, _ = verts_px.shape
    _, h, w = pix_to_face.shape
    n_faces = faces.shape[0]
    flat = pix_to_face.reshape(-1)
    idx = torch.nonzero(flat >= 0).squeeze(1)  # (M,) covered pixels
    packed = flat[idx]
    b = torch.div(packed, n_faces, rounding_mode="floor")
    f = packed - b * n_faces
    vid = faces[f] + (b * n_verts)[:, None]  # (M, 3) ids into the flattened (B * V) vertices
    tri = verts_px.reshape(bsz * n_verts, 3)[vid]  # (M, 3, 3), differentiable
    rem = idx - torch.div(idx, h * w, rounding_mode="floor") * (h * w)
    row = torch.div(rem, w, rounding_mode="floor")
    col = rem - row * w
    px = col.to(tri.dtype) + 0.5
    py = row.to(tri.dtype) + 0.5
    x0, y0, z0 = tri[:, 0].unbind(-1)
    x1, y1, z1 = tri[:, 1].unbind(-1)
    x2, y2, z2 = tri[:, 2].unbind(-1)
    area = (x0 - x1) * (y2 - y1) - (y0 - y1) * (x2 - x1)
    w0 = ((px - x1) * (y2 - y1) - (py - y1) * (x2 - x1)) / area
    w1 = ((px - x2) * (y0 - y2) - (py - y2) * (x0 - x2)) / area
    w2 = ((px - x0) * (y1 - y0) - (py - y0) * (x1 - x0)) / area
    bary_c = torch.stack([w0, w1, w2], dim=-1)  # (M, 3)
    z_c = w0 * z0 + w1 * z1 + w2 * z2

    bary = torch.full((bsz * h * w, 3), -1.0, dtype=verts_px.dtype, device=verts_px.device)
    bary = bary.index_put((idx,), bary_c)
    zbuf = torch.full((bsz * h * w,), -1.0, dtype=verts_px.dtype, device=verts_px.device)
    zbuf = zbuf.index_put((idx,), z_c)

    with torch.no_grad():
        # Squared distance from the pixel centre to the nearest edge (segments), in NDC units, negative inside.
        scale = tri.new_tensor([2.0 / w, 2.0 / h])
        p = torch.stack([px, py], -1) * scale  # (M, 2)
        v = tri[..., :2].detach() * scale  # (M, 3, 2)
        a = v
        bb = v.roll(-1, dims=1)
        ab = bb - a
        ap = p[:, None] - a
        t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-20)).clamp(0.0, 1.0)
        d2 = ((ap - t[..., None] * ab) ** 2).sum(-1).amin(1)
        inside = (bary_c.detach() > 0).all(-1)
        d2 = torch.where(inside, -d2, d2)
        dists = torch.full((bsz * h * w,), -1.0, dtype=verts_px.dtype, device=verts_px.device)
        dists[idx] = d2.to(dists.dtype)
    return bary.view(bsz, h, w, 3), zbuf.view(bsz, h, w), dists.view(bsz, h, w)


def rasterize_zbuffer(
    verts_ndc: torch.Tensor,
    faces: torch.Tensor,
    image_size: ImageSize,
    cull_backfaces: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> Fragments:
    """Our CPU rasterizer (also runs on CUDA tensors); same arguments and output as :func:`rasterize`."""
    h, w = image_hw(image_size)
    verts_px = _screen_vertices(verts_ndc, h, w)
    pix_to_face = zbuffer_visibility(verts_px.detach(), faces, h, w, cull_backfaces, max_candidates)
    bary, zbuf, dists = barycentrics_from_pix_to_face(verts_px, faces, pix_to_face)
    return Fragments(
        pix_to_face=pix_to_face[..., None],
        zbuf=zbuf[..., None],
        bary_coords=bary[..., None, :],
        dists=dists[..., None],
    )

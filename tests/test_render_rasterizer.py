"""The CPU z-buffer rasterizer agrees with pytorch3d's rasterize_meshes (visibility, barycentrics, gradients)."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
from pytorch3d.structures import Meshes

from avface.render.cameras import ndc_to_pixels, orthographic_project, pixels_to_ndc
from avface.render.meshes import face_like_mesh, icosphere
from avface.render.rasterizer import rasterize, rasterize_zbuffer


def _p3d_two_layers(verts_ndc: torch.Tensor, faces: torch.Tensor, h: int, w: int, cull: bool = False):
    """pytorch3d's two nearest faces per pixel on our NDC (for excluding depth ties from the comparison)."""
    m = float(min(h, w))
    offset = verts_ndc[..., 2].amax() + 1.0
    v = torch.stack(
        [-verts_ndc[..., 0] * w / m, -verts_ndc[..., 1] * h / m, offset - verts_ndc[..., 2]], dim=-1
    ).detach()
    meshes = Meshes(verts=v, faces=faces[None].expand(v.shape[0], -1, -1))
    p2f, zbuf, bary, dists = rasterize_meshes(
        meshes, image_size=(h, w), blur_radius=0.0, faces_per_pixel=2, bin_size=0, cull_backfaces=cull
    )
    return p2f, offset - zbuf, bary, dists


def _compare(verts_ndc: torch.Tensor, faces: torch.Tensor, h: int, w: int, cull: bool = False) -> float:
    """Agreement of pix_to_face on non-tie pixels; asserts barycentrics within 1e-4 where faces agree."""
    ours = rasterize(verts_ndc, faces, (h, w), backend="zbuffer", cull_backfaces=cull)
    p2f, z2, bary, dists = _p3d_two_layers(verts_ndc, faces, h, w, cull)
    # Ties: the two nearest faces at nearly the same depth (shared edges/vertices of a mesh, coplanar overlaps);
    # edges: pixel centres within a hair of the visible face's boundary. Either may legitimately differ.
    tie = (p2f[..., 1] >= 0) & ((z2[..., 0] - z2[..., 1]).abs() < 1e-5)
    edge = (p2f[..., 0] >= 0) & (dists[..., 0].abs() < 1e-9)
    edge |= (ours.pix_to_face[..., 0] >= 0) & (ours.dists[..., 0].abs() < 1e-9)
    ok = ~(tie | edge)
    same = ours.pix_to_face[..., 0] == p2f[..., 0]
    agreement = (same & ok).sum().item() / max(ok.sum().item(), 1)
    both = same & (p2f[..., 0] >= 0)
    if both.any():
        diff = (ours.bary_coords[..., 0, :] - bary[..., 0, :])[both].abs().max().item()
        assert diff < 1e-4, diff
        zdiff = (ours.zbuf[..., 0] - z2[..., 0])[both].abs().max().item()
        assert zdiff < 1e-4, zdiff
    return agreement


def _random_triangles(n: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, n, 1, 3, generator=g) * 2.4 - 1.2  # some partly off-screen
    size = 0.05 + 0.4 * torch.rand(batch, n, 1, 1, generator=g)
    verts = (centres + size * torch.randn(batch, n, 3, 3, generator=g)).reshape(batch, n * 3, 3)
    faces = torch.arange(n * 3).view(n, 3)
    return verts, faces


def test_random_triangles_match_pytorch3d() -> None:
    verts, faces = _random_triangles(150, 2, seed=0)
    assert _compare(verts, faces, 48, 48) >= 0.995


def test_random_triangles_non_square_and_culling_match_pytorch3d() -> None:
    verts, faces = _random_triangles(100, 1, seed=1)
    assert _compare(verts, faces, 40, 56) >= 0.995
    assert _compare(verts, faces, 48, 48, cull=True) >= 0.995


def test_face_like_and_sphere_match_pytorch3d() -> None:
    v, f, _ = face_like_mesh(24)
    cam = torch.tensor([[7.0, 0.01, -0.005], [6.0, -0.02, 0.01]])
    assert _compare(orthographic_project(v[None].expand(2, -1, -1), cam), f, 64, 64) >= 0.995
    vs, fs = icosphere(3, radius=0.7)
    assert _compare(orthographic_project(vs[None], torch.tensor([[1.0, 0.05, 0.1]])), fs, 64, 64) >= 0.995


def test_gradients_match_pytorch3d() -> None:
    """d(sum of weighted barycentrics and depth)/d(vertices) equals pytorch3d's backward where visibility agrees."""
    v, f, _ = face_like_mesh(10)
    verts = orthographic_project(v[None], torch.tensor([[8.0, 0.0123, -0.0071]]))
    g = torch.Generator().manual_seed(3)
    wb = torch.randn(1, 40, 40, 1, 3, generator=g)
    wz = torch.randn(1, 40, 40, 1, generator=g)
    xs = {k: verts.clone().float().requires_grad_(True) for k in ("zbuffer", "pytorch3d")}
    frs = {k: rasterize(x, f, 40, backend=k) for k, x in xs.items()}
    p2f = frs["zbuffer"].pix_to_face
    mask = ((p2f >= 0) & (p2f == frs["pytorch3d"].pix_to_face)).float()
    assert mask.sum() > 0.95 * (p2f >= 0).sum()
    grads = []
    for k, fr in frs.items():
        loss = (fr.bary_coords * wb * mask[..., None]).sum() + (fr.zbuf * wz * mask).sum()
        loss.backward()
        grads.append(xs[k].grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-3)
    assert grads[0].abs().sum() > 0


def test_chunking_batch16_and_offscreen() -> None:
    v, f, _ = face_like_mesh(16)
    cam = torch.tensor([[7.0, 0.0, 0.0]]).repeat(16, 1)
    cam[:, 1] = torch.linspace(-0.05, 0.05, 16)
    verts = orthographic_project(v[None].expand(16, -1, -1), cam)
    a = rasterize_zbuffer(verts, f, 32)
    b = rasterize_zbuffer(verts, f, 32, max_candidates=257)  # many chunks, same answer
    assert a.pix_to_face.shape == (16, 32, 32, 1) and a.bary_coords.shape == (16, 32, 32, 1, 3)
    assert torch.equal(a.pix_to_face, b.pix_to_face)
    torch.testing.assert_close(a.bary_coords, b.bary_coords)
    # Packed ids: batch element i only sees faces i * F .. (i + 1) * F - 1.
    nf = f.shape[0]
    for i in (0, 7, 15):
        ids = a.pix_to_face[i][a.pix_to_face[i] >= 0]
        assert ids.min() >= i * nf and ids.max() < (i + 1) * nf
    far = rasterize_zbuffer(verts + torch.tensor([5.0, 0.0, 0.0]), f, 32)
    assert (far.pix_to_face == -1).all() and (far.bary_coords == -1).all()


def test_huge_triangle_uses_expansion_path() -> None:
    """A triangle bigger than every grid class, at a size where pytorch3d is still quick."""
    verts = torch.tensor([[[-0.9, -0.9, 0.0], [0.95, -0.8, 0.1], [-0.7, 0.9, 0.2]]])
    assert _compare(verts, torch.tensor([[0, 1, 2]]), 80, 80) == 1.0


def test_ndc_pixel_convention() -> None:
    """Centre of pixel (c, r) is at u = c + 0.5: the rasterizer covers exactly the centres inside a triangle."""
    xy = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(ndc_to_pixels(xy, (20, 40)), torch.tensor([[0.0, 0.0], [40.0, 20.0], [20.0, 10.0]]))
    torch.testing.assert_close(pixels_to_ndc(ndc_to_pixels(xy, 7), 7), xy)
    # An axis-aligned right triangle in pixels covering centres with c + r < 5 (strictly inside).
    px = torch.tensor([[[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]]])
    v = torch.cat([pixels_to_ndc(px[..., :2], 8), px[..., 2:]], dim=-1)
    fr = rasterize_zbuffer(v, torch.tensor([[0, 1, 2]]), 8)
    rr, cc = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    expected = (cc + 0.5 + rr + 0.5) < 6.0
    assert torch.equal(fr.pix_to_face[0, ..., 0] >= 0, expected)
    assert math.isclose(fr.bary_coords[0, 0, 0, 0].sum().item(), 1.0, rel_tol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backends_agree() -> None:
    v, f, _ = face_like_mesh(40)
    verts = orthographic_project(v[None].repeat(4, 1, 1), torch.tensor([[7.0, 0.0, 0.0]]).repeat(4, 1)).cuda()
    a = rasterize(verts, f.cuda(), 128, backend="pytorch3d")
    b = rasterize(verts, f.cuda(), 128, backend="zbuffer")
    assert (a.pix_to_face == b.pix_to_face).float().mean() > 0.995


def test_interpolate_matches_pytorch3d() -> None:
    from pytorch3d.ops.interp_face_attrs import interpolate_face_attributes_python

    from avface.render.rasterizer import interpolate_face_attributes

    v, f, _ = face_like_mesh(8)
    verts = orthographic_project(v[None].repeat(2, 1, 1), torch.tensor([[7.0, 0.01, 0.0], [6.0, 0.0, 0.02]]))
    fr = rasterize(verts, f, 24)
    attrs = torch.randn(2 * f.shape[0], 3, 5, generator=torch.Generator().manual_seed(0))
    bary = fr.bary_coords.detach().requires_grad_(True)
    a1 = attrs.clone().requires_grad_(True)
    a2 = attrs.clone().requires_grad_(True)
    ours = interpolate_face_attributes(fr.pix_to_face, bary, a1)
    ref = interpolate_face_attributes_python(fr.pix_to_face, bary, a2)
    torch.testing.assert_close(ours, ref)
    w = torch.randn_like(ours)
    g_ours = torch.autograd.grad((ours * w).sum(), [bary, a1])
    g_ref = torch.autograd.grad((ref * w).sum(), [bary, a2])
    for x, y in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(x, y)


def test_float32_barycentrics_match_float64_on_slivers() -> None:
    """A dense sphere has sliver triangles along its silhouette, where barycentrics are ill-conditioned. Ours are
    computed relative to a face corner and stay within 1e-4 of a float64 run (pytorch3d's own float32 kernel is
    off by ~1e-3 on the worst of these, which is why the comparisons above use moderate meshes)."""
    vs, fs = icosphere(5, radius=0.8)
    v = orthographic_project(vs[None], torch.tensor([[1.0, 0.01, 0.02]]))
    a = rasterize_zbuffer(v, fs, 128)
    b = rasterize_zbuffer(v.double(), fs, 128)
    same = (a.pix_to_face == b.pix_to_face) & (a.pix_to_face >= 0)
    assert same.float().sum() > 0.99 * (a.pix_to_face >= 0).sum()
    assert (a.bary_coords.double() - b.bary_coords)[same[..., None].expand_as(b.bary_coords)].abs().max() < 1e-4

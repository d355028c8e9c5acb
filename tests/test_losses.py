"""AVFace losses: each term is zero where it must be, grows where it must, and keeps gradients finite."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from avface.losses import (
    coefficient_regularizer,
    displacement_l1,
    eye_closure_loss,
    id_mrf,
    image_laplacian,
    landmark_loss,
    landmark_weights,
    laplacian_normals_loss,
    light_regularizer,
    lip_corner_loss,
    mouth_closure_loss,
    nonvisible_region,
    parameter_loss,
    photometric_loss,
    shape_consistency_loss,
    symmetry_loss,
)
from avface.models.perceptual import IdentityLoss, IDMRFLoss, vgg19_features_to_relu4_2


def _normal_map(n=1, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    nm = torch.stack([xs * 0.5, -ys * 0.5, torch.ones_like(xs)])[None].repeat(n, 1, 1, 1)
    nm = nm + 0.05 * torch.randn(nm.shape, generator=g)
    return F.normalize(nm, dim=1)


def test_laplacian_kernel_on_quadratic():
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    lap = image_laplacian((xs**2 + ys**2)[None, None])
    assert torch.allclose(lap[..., 1:-1, 1:-1], torch.full((6, 6), 4.0))  # Lap(x^2 + y^2) = 4


def test_laplacian_normals_loss_zero_for_identical_and_grows_with_noise():
    target = _normal_map(2)
    assert laplacian_normals_loss(target, target.clone()).item() == 0.0
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(target.shape, generator=g)
    vals = [laplacian_normals_loss(F.normalize(target + s * noise, dim=1), target).item() for s in (0.01, 0.05, 0.2)]
    assert 0 < vals[0] < vals[1] < vals[2]
    # a constant offset has zero Laplacian: the loss sees high frequencies, not the absolute value
    assert laplacian_normals_loss(target + 0.3, target).item() < 1e-6
    # masked to a region: noise outside the region is ignored
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    noisy = target.clone()
    noisy[..., :4, :] += noise[..., :4, :]
    assert laplacian_normals_loss(noisy, target, mask).item() == 0.0
    noisy[..., 12:16, 12:16] += noise[..., 12:16, 12:16]
    assert laplacian_normals_loss(noisy, target, mask).item() > 0
    assert laplacian_normals_loss(noisy, target, torch.zeros_like(mask)).item() == 0.0  # empty mask: 0, not NaN


def test_lip_normals_loss_keeps_a_thin_lip_ring_and_drops_stencils_that_leave_the_face():
    """A 2-px lip ring inside the face: with ``defined`` (where normals exist) every ring pixel counts, and only
    pixels whose 3x3 stencil reaches past ``defined`` are dropped. Eroding the ring itself would leave nothing."""
    target = _normal_map(1)
    g = torch.Generator().manual_seed(2)
    noisy = F.normalize(target + 0.2 * torch.randn(target.shape, generator=g), dim=1)
    ring = torch.zeros(1, 1, 32, 32)
    ring[..., 12:20, 10:22] = 1
    ring[..., 14:18, 12:20] = 0  # the ring is 2 px thick, like the lips at 64 px
    face = torch.zeros(1, 1, 32, 32)
    face[..., 4:28, 4:28] = 1
    diff = (image_laplacian(noisy) - image_laplacian(target)).abs()  # (1,3,32,32)
    expected = diff.permute(0, 2, 3, 1)[ring[:, 0] > 0].mean()
    assert torch.allclose(laplacian_normals_loss(noisy, target, ring, defined=face), expected)
    assert laplacian_normals_loss(noisy, target, ring, erode=True).item() == 0.0  # the eroded ring is empty
    # the face ends at column 21: the stencils of the ring pixels in column 21 read column 22, so they are dropped
    face_cut = face.clone()
    face_cut[..., 22:] = 0
    keep = ring.clone()
    keep[..., 21:] = 0
    expected_cut = diff.permute(0, 2, 3, 1)[keep[:, 0] > 0].mean()
    assert torch.allclose(laplacian_normals_loss(noisy, target, ring, defined=face_cut), expected_cut)


def test_landmark_losses():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 68, 2, generator=g) * 2 - 1
    for fn in (landmark_loss, eye_closure_loss, mouth_closure_loss, lip_corner_loss):
        assert fn(gt, gt.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # a rigid translation changes the landmark loss but no relative-distance loss
    shifted = gt + 0.1
    assert landmark_loss(shifted, gt).item() > 0
    for fn in (eye_closure_loss, mouth_closure_loss, lip_corner_loss):
        assert fn(shifted, gt).item() == pytest.approx(0.0, abs=1e-5)
    # opening the mouth: mouth closure sees it, eye closure does not
    opened = gt.clone()
    opened[..., 56:59, 1] += 0.2
    opened[..., 65:68, 1] += 0.2
    assert mouth_closure_loss(opened, gt).item() > 0.01
    assert eye_closure_loss(opened, gt).item() == pytest.approx(0.0, abs=1e-6)
    wide = gt.clone()
    wide[..., 54, 0] += 0.3
    assert lip_corner_loss(wide, gt).item() > 0.01
    # weights: an error on a mouth corner (w 3) costs 3x an error on a brow point (w 1)
    w = landmark_weights()
    e48, e20 = gt.clone(), gt.clone()
    e48[..., 48, 0] += 0.1
    e20[..., 20, 0] += 0.1
    assert w[48] == 3 and w[20] == 1
    assert landmark_loss(e48, gt).item() == pytest.approx(3 * landmark_loss(e20, gt).item(), rel=1e-4)
    # invalid frames are ignored
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[0, 1] = False
    bad = gt.clone()
    bad[0, 1] += 5
    assert landmark_loss(bad, gt, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert landmark_loss(bad, gt, torch.zeros_like(valid)).item() == 0.0


def test_photometric_regularisers_consistency_symmetry():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 16, generator=g)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    other = img.clone()
    other[..., :2, :] = 0  # differs only outside the mask
    assert photometric_loss(other, img, mask).item() == 0.0
    assert photometric_loss(other, img).item() > 0
    assert coefficient_regularizer(torch.zeros(2, 3, 100)).item() == 0
    # DECA's sum(code**2)/2, per frame, averaged over frames
    assert coefficient_regularizer(torch.ones(2, 3, 100)).item() == pytest.approx(50.0)
    same = torch.randn(1, 1, 100, generator=g).repeat(2, 4, 1)
    assert shape_consistency_loss(same).item() == pytest.approx(0.0, abs=1e-10)
    varied = same + 0.1 * torch.randn(same.shape, generator=g)
    assert shape_consistency_loss(varied).item() > 0
    # identity labels pool windows: two windows with different constant shapes are consistent only if
    # they belong to different people
    two = torch.cat([same[:1], same[:1] + 1.0])
    assert shape_consistency_loss(two, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-10)
    assert shape_consistency_loss(two, torch.tensor([5, 5])).item() == pytest.approx(25.0, rel=1e-5)
    d = torch.randn(2, 1, 8, 8, generator=g)
    sym = d + d.flip(-1)
    assert symmetry_loss(sym).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetry_loss(d).item() > 0
    assert displacement_l1(torch.zeros(2, 1, 8, 8)).item() == 0 and displacement_l1(d).item() > 0


def test_id_mrf_core():
    g = torch.Generator().manual_seed(0)
    tar = torch.randn(2, 16, 6, 6, generator=g)
    same = id_mrf(tar.clone(), tar)
    # relative (nearest-neighbour) similarity: small noise keeps every nearest neighbour, so ~0 like identical
    near = id_mrf(tar + 0.5 * torch.randn(tar.shape, generator=g), tar)
    far = id_mrf(torch.randn(tar.shape, generator=g), tar)
    assert torch.isfinite(same) and same.item() == pytest.approx(0.0, abs=1e-5)
    assert same <= near < far and far > 0.5
    gen = tar.clone().requires_grad_(True)
    id_mrf(gen + 0.2, tar).backward()
    assert torch.isfinite(gen.grad).all()


def test_losses_needing_weights_are_skipped_with_one_warning(caplog, tmp_path):
    from avface.models import perceptual

    perceptual._warned.clear()
    x = torch.rand(1, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="avface.models.perceptual"):
        for _ in range(3):
            mrf = IDMRFLoss(None)
            assert not mrf.available and mrf(x, x) is None
            idl = IdentityLoss(tmp_path / "absent.pth")
            assert not idl.available and idl(x, x) is None
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("ID-MRF" in m for m in msgs) == 1 and sum("identity loss" in m for m in msgs) == 1


def test_idmrf_with_user_weights_file(tmp_path):
    """VGG19 weights (torchvision key names) written by the test: loaded weights_only, loss is finite, lower for
    identical images, and passes gradient to the generated image only."""
    torch.manual_seed(0)
    feats = vgg19_features_to_relu4_2()
    sd = {"features." + k: v for k, v in feats.state_dict().items()}
    sd["classifier.0.bias"] = torch.zeros(4)  # extra keys of a full VGG19 state dict are ignored
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    loss = IDMRFLoss(path)
    assert loss.available
    g = torch.Generator().manual_seed(1)
    tar = torch.rand(1, 3, 32, 32, generator=g)
    gen = torch.rand(1, 3, 32, 32, generator=g).requires_grad_(True)
    l_same, l_diff = loss(tar, tar), loss(gen, tar)
    assert torch.isfinite(l_diff) and l_same < l_diff
    l_diff.backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_identity_loss_with_user_weights_file(tmp_path):
    from avface.models.blocks import ResNet
    from avface.models.config import BackboneConfig

    small = BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem=8)
    torch.manual_seed(0)
    path = tmp_path / "face_rec.pth"
    torch.save({**ResNet(small).state_dict(), "fc.weight": torch.zeros(5, 64)}, path)
    idl = IdentityLoss(path, backbone=small, input_size=64)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    assert idl(a, a).item() == pytest.approx(0.0, abs=1e-5)
    assert idl(a, b).item() > 0


def test_mouth_closure_is_emoca_inner_lip_distance():
    """EMOCA's lip distance: inner-lip pairs (61, 67), (62, 66), (63, 65) only. Thicker lips (outer contour moved,
    inner contour fixed) leave the mouth opening, hence the loss, unchanged; opening the inner lips does not."""
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 68, 2, generator=g) * 2 - 1
    thick = gt.clone()
    thick[:, 49:54, 1] -= 0.1  # outer upper lip up (NDC y down)
    thick[:, 55:60, 1] += 0.1  # outer lower lip down
    assert mouth_closure_loss(thick, gt).item() == pytest.approx(0.0, abs=1e-6)
    opened = gt.clone()
    opened[:, 65:68, 1] += 0.1
    inner = (opened[:, [61, 62, 63]] - opened[:, [67, 66, 65]]).norm(dim=-1)
    inner_gt = (gt[:, [61, 62, 63]] - gt[:, [67, 66, 65]]).norm(dim=-1)
    assert mouth_closure_loss(opened, gt).item() == pytest.approx((inner - inner_gt).abs().mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ reference formulas
def _deca_batch_kp_2d_l1_loss(real_2d_kp, predicted_2d_kp, weights=None):
    """DECA (decalib/utils/lossfunc.py), transcribed literally (``.cuda()`` dropped)."""
    if weights is not None:
        real_2d_kp[:, :, 2] = weights[None, :] * real_2d_kp[:, :, 2]
    kp_gt = real_2d_kp.view(-1, 3)
    kp_pred = predicted_2d_kp.contiguous().view(-1, 2)
    vis = kp_gt[:, 2]
    k = torch.sum(vis) * 2.0 + 1e-8
    dif_abs = torch.abs(kp_gt[:, :2] - kp_pred).sum(1)
    return torch.matmul(dif_abs, vis) * 1.0 / k


def _deca_weighted_landmark_loss(predicted_landmarks, landmarks_gt, weight=1.0):
    real_2d = landmarks_gt
    weights = torch.ones((68,))
    weights[5:7] = 2
    weights[10:12] = 2
    # nose points
    weights[27:36] = 1.5
    weights[30] = 3
    weights[31] = 3
    weights[35] = 3
    # inner mouth
    weights[60:68] = 1.5
    weights[48:60] = 1.5
    weights[48] = 3
    weights[54] = 3
    loss_lmk_2d = _deca_batch_kp_2d_l1_loss(real_2d, predicted_landmarks, weights)
    return loss_lmk_2d * weight


def test_landmark_loss_is_decas_weighted_landmark_loss():
    g = torch.Generator().manual_seed(11)
    pred = torch.rand(3, 4, 68, 2, generator=g) * 2 - 1
    gt = torch.rand(3, 4, 68, 2, generator=g) * 2 - 1
    valid = torch.rand(3, 4, generator=g) > 0.3
    conf = torch.rand(3, 4, 68, generator=g)
    # DECA's ground truth is (N, 68, 3) with the visibility in the last column
    gt3 = torch.cat([gt, (valid[..., None] * conf)[..., None]], dim=-1).reshape(12, 68, 3)
    ref = _deca_weighted_landmark_loss(pred.reshape(12, 68, 2), gt3.clone())
    ours = landmark_loss(pred, gt, valid, confidence=conf)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    all_visible = torch.cat([gt, torch.ones(3, 4, 68, 1)], dim=-1).reshape(12, 68, 3)
    assert landmark_loss(pred, gt).item() == pytest.approx(
        _deca_weighted_landmark_loss(pred.reshape(12, 68, 2), all_visible).item(), rel=1e-5)
    # batch-size invariant: the same frames twice give the same value
    assert landmark_loss(torch.cat([pred, pred]), torch.cat([gt, gt]), torch.cat([valid, valid])).item() == \
        pytest.approx(landmark_loss(pred, gt, valid).item(), rel=1e-6)


def test_photometric_light_and_coefficient_terms_are_decas():
    g = torch.Generator().manual_seed(12)
    r, i = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    m = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    assert photometric_loss(r, i, m).item() == pytest.approx((m * (r - i).abs()).mean().item(), rel=1e-6)
    light = torch.randn(2, 5, 9, 3, generator=g)
    deca = ((torch.mean(light, dim=-1)[..., None] - light) ** 2).mean()  # DECA: light (B,9,3), mean over dim 2
    assert light_regularizer(light).item() == pytest.approx(deca.item(), rel=1e-6)
    assert light_regularizer(light.mean(-1, keepdim=True).expand_as(light)).item() == pytest.approx(0.0, abs=1e-12)
    code = torch.randn(4, 16, 50, generator=g)
    # at DECA's batch of 64 frames, 64 x our per-frame mean is exactly DECA's sum(code**2)/2 over the batch
    assert 64 * coefficient_regularizer(code).item() == pytest.approx((torch.sum(code**2) / 2).item(), rel=1e-5)
    assert coefficient_regularizer(torch.cat([code, code])).item() == pytest.approx(
        coefficient_regularizer(code).item(), rel=1e-6)


def test_symmetry_is_on_the_hidden_region_with_the_mirror_detached():
    g = torch.Generator().manual_seed(13)
    d = torch.randn(2, 1, 8, 8, generator=g).requires_grad_(True)
    visible = torch.zeros(2, 1, 8, 8)
    visible[..., :, :5] = 1  # columns 0-4 seen; 5-7 hidden
    nonvis = nonvisible_region(visible)
    # DECA's 1 - erode(visible): the eroded visible region loses its border column
    assert nonvis[0, 0, 3, :4].sum() == 0 and nonvis[0, 0, 3, 4:].min() == 1
    loss = symmetry_loss(d, nonvis)
    ref = (nonvis * (d - torch.flip(d, [-1]).detach()).abs()).sum() / d.numel()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert d.grad[..., :4].abs().sum() == 0 and d.grad[..., 4:].abs().sum() > 0  # only hidden texels move
    assert symmetry_loss(torch.cat([d, d]).detach(), torch.cat([nonvis, nonvis])).item() == pytest.approx(
        loss.item(), rel=1e-6)


def test_id_mrf_is_a_batch_mean():
    g = torch.Generator().manual_seed(14)
    tar = torch.randn(2, 16, 6, 6, generator=g)
    gen = torch.randn(2, 16, 6, 6, generator=g)
    one = id_mrf(gen, tar)
    assert id_mrf(torch.cat([gen, gen]), torch.cat([tar, tar])).item() == pytest.approx(one.item(), rel=1e-5)


def test_parameter_loss_is_mse_in_units_of_the_spread():
    g = torch.Generator().manual_seed(15)
    tgt = {"shape": torch.randn(2, 4, 10, generator=g), "jaw": torch.randn(2, 4, 3, generator=g)}
    scale = {"shape": torch.linspace(0.5, 2.0, 10), "jaw": 0.1}
    pred = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in tgt.items()}
    pred["extra"] = torch.zeros(1)  # predictions without a target are not scored
    out = parameter_loss(pred, tgt, scale, weights={"jaw": 2.0})
    assert set(out) == {"shape", "jaw"}
    assert out["shape"].item() == pytest.approx((((pred["shape"] - tgt["shape"]) / scale["shape"]) ** 2).mean().item(),
                                                rel=1e-6)
    assert out["jaw"].item() == pytest.approx(2.0 * (((pred["jaw"] - tgt["jaw"]) / 0.1) ** 2).mean().item(), rel=1e-6)
    assert parameter_loss(tgt, tgt, scale)["shape"].item() == 0.0
    dup = parameter_loss({k: torch.cat([v, v]) for k, v in pred.items() if k != "extra"},
                         {k: torch.cat([v, v]) for k, v in tgt.items()}, scale, weights={"jaw": 2.0})
    assert all(dup[k].item() == pytest.approx(out[k].item(), rel=1e-6) for k in out)
    assert "jaw" not in parameter_loss(pred, tgt, scale, weights={"jaw": 0.0})
    p = {k: v.clone().requires_grad_(True) for k, v in pred.items()}
    sum(parameter_loss(p, tgt, scale).values()).backward()
    assert p["shape"].grad.abs().sum() > 0 and p["jaw"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):
        parameter_loss({**pred, "shape": torch.zeros(2, 4, 9)}, tgt, scale)
    with pytest.raises(KeyError, match="scale"):
        parameter_loss(pred, tgt, {"shape": 1.0})


def test_vertex_distance_is_the_mean_euclidean_distance_in_mm():
    from avface.losses import vertex_distance_loss

    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 50, 3, generator=g) * 0.05
    shift = torch.tensor([0.003, 0.0, 0.004])  # 5 mm
    assert torch.isclose(vertex_distance_loss(a + shift, a), torch.tensor(5.0), atol=1e-4)
    # a mean: the same per-mesh error gives the same value at any batch size
    b = a.clone().requires_grad_(True)
    one = vertex_distance_loss(b[:1] + shift, a[:1])
    assert torch.isclose(one, vertex_distance_loss(b + shift, a), atol=1e-4)
    vertex_distance_loss(b, a + shift).backward()
    assert b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="alike"):
        vertex_distance_loss(a, a[..., :2])


def test_uniform_laplacian_of_lip_offsets_is_nhas_smoothness_term():
    """Zero for a rigid shift of the lips, small for the corpus's smooth lip fields, large for per-vertex noise of
    the same size; a mean, so batch-size invariant; the one-ring stays inside the lips."""
    from avface.face_model import FaceModel, load_face_model
    from avface.face_model.lip_detail import lip_detail_basis
    from avface.losses.geometry import submesh_neighbours, uniform_laplacian_loss

    fm = FaceModel(load_face_model(None))
    ids = fm.region("lips").long()
    ring, mask = submesh_neighbours(fm.faces, ids)
    assert ring.shape[0] == len(ids) and mask.any(-1).all() and int(ring[mask].max()) < len(ids)
    k = len(ids)
    shift = torch.tensor([0.001, -0.002, 0.0005]).expand(2, k, 3)
    assert uniform_laplacian_loss(shift, ring, mask) < 1e-10
    fields = torch.as_tensor(lip_detail_basis(fm, 13), dtype=torch.float32)  # (3, K, 3), 1 mm RMS each
    noise = torch.randn(3, k, 3, generator=torch.Generator().manual_seed(0))
    noise = noise / noise.square().sum(-1).mean(-1, keepdim=True).sqrt()[..., None] * 1e-3  # 1 mm RMS
    smooth, rough = uniform_laplacian_loss(fields, ring, mask), uniform_laplacian_loss(noise, ring, mask)
    assert smooth < 0.05 * rough, (smooth.item(), rough.item())
    assert torch.isclose(uniform_laplacian_loss(fields[:1], ring, mask),
                         uniform_laplacian_loss(fields[:1].expand(4, k, 3), ring, mask))


def test_lowpass_normals_loss_is_zero_for_equal_maps_and_forgives_a_pixel_of_misalignment():
    """The lip stage's low-passed normals term: 0 for equal maps; against a 1 px shift of a map with a sharp crease
    (what the coarse stage's pose error does to the lips at 64 px) it is far smaller, relative to a real tilt of
    the normals, than eq. (1)'s Laplacian term."""
    from avface.losses.maps import laplacian_normals_loss, lowpass_normals_loss

    n = torch.zeros(1, 3, 32, 32)
    n[:, 2] = 1.0
    n[:, 0, :, 16:] = 0.4  # a crease down the middle
    n = F.normalize(n, dim=1)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    defined = torch.ones(1, 1, 32, 32)
    assert lowpass_normals_loss(n, n, mask, defined) == 0
    shifted = torch.roll(n, 1, dims=3)
    tilted = F.normalize(n + torch.tensor([0.0, 0.15, 0.0])[None, :, None, None], dim=1)  # about 8 degrees
    low = lowpass_normals_loss(shifted, n, mask, defined) / lowpass_normals_loss(tilted, n, mask, defined)
    lap_tilt = laplacian_normals_loss(tilted, n, mask, defined=defined)
    lap = laplacian_normals_loss(shifted, n, mask, defined=defined) / lap_tilt.clamp_min(1e-12)
    assert low < 0.5 and lap > 2 * low, (low.item(), lap.item())
    p = tilted.clone().requires_grad_(True)
    lowpass_normals_loss(p, n, mask, defined).backward()
    assert p.grad.abs().sum() > 0

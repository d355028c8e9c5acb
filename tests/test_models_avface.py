"""The combined AVFace model on the open starter face model and the project renderer (tiny config, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avface.face_model import FaceModel, load_face_model
from avface.models import AVFaceConfig
from avface.models.avface import AVFace
from avface.models.inputs import Batch
from avface.models.outputs import AVFaceOutput
from avface.models.stages import MODEL_STAGES
from avface.train.objectives import objective


def _losses(model: AVFace, batch: Batch, out: AVFaceOutput) -> dict[str, torch.Tensor]:
    """The objective of the model's current stage (avface.train.objectives)."""
    return objective(model.stage)(model, batch, out)


@pytest.fixture(scope="module")
def face_model() -> FaceModel:
    return FaceModel(load_face_model(None))


def _batch(cfg: AVFaceConfig, fm: FaceModel, b: int, t: int, seed: int = 0) -> Batch:
    """Random frames + landmarks of a known face (the face model's own landmarks, projected, in pixels)."""
    from avface.render.cameras import orthographic_project

    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    with torch.no_grad():
        geo = fm(shape=0.5 * torch.randn(b * t, 100, generator=g),
                 global_pose=0.1 * torch.randn(b * t, 3, generator=g),
                 jaw_pose=torch.tensor([[0.15, 0.0, 0.0]]).expand(b * t, 3))
        cam = torch.tensor([[7.0, 0.01, -0.02]]).expand(b * t, 3)
        ndc = orthographic_project(geo.landmarks68_dynamic, cam)[..., :2]
    px = (ndc + 1) * s / 2
    return Batch(
        images=torch.rand(b, t, 3, s, s, generator=g),
        audio=torch.randn(b, t, cfg.audio_window, cfg.audio_dim, generator=g),
        landmarks=px.reshape(b, t, 68, 2),
        landmarks_valid=torch.ones(b, t, dtype=torch.bool),
        normals=torch.nn.functional.normalize(torch.randn(b, t, 3, s, s, generator=g), dim=2),
    )


def test_all_stages_shapes_losses_and_gradients(face_model):
    cfg = AVFaceConfig.tiny()
    # no modality dropout here: a dropped audio window would (by design) zero the lip offsets of the sample
    cfg.expression = dataclasses.replace(cfg.expression, modality_dropout=False)
    model = AVFace(cfg, face_model)
    batch = _batch(cfg, face_model, b=1, t=3)
    b, t, s, u = 1, 3, cfg.image_size, cfg.detail.uv_size
    expected = {
        "coarse": {"landmark", "eye", "mouth_closure", "lip_corner", "reg_shape", "reg_expression", "reg_albedo",
                   "reg_light", "shape_consistency", "photometric"},
        "lip": {"landmark", "eye", "mouth_closure", "lip_corner", "reg_shape", "reg_expression", "reg_albedo",
                "reg_light", "shape_consistency", "photometric", "normals_lip"},
        "detail": {"photometric_detail", "normals", "symmetry", "displacement"},  # no VGG19 weights: no mrf
    }
    for stage in ("coarse", "lip", "detail"):
        model.set_stage(stage)
        model.zero_grad(set_to_none=True)
        out = model(batch)
        v = face_model.num_vertices
        assert out.vertices.shape == (b, t, v, 3) and out.landmarks2d.shape == (b, t, 68, 2)
        if stage != "detail":
            assert out.render_coarse.shape == (b, t, 3, s, s)
        if stage != "coarse":
            assert out.lip_offsets.shape == (b, t, int(model.lip_ids.numel()), 3)
            moved = (out.vertices - out.vertices_coarse).norm(dim=-1).amax(dim=(0, 1))
            others = torch.ones(v, dtype=torch.bool)
            others[model.lip_ids] = False
            assert moved[others].max() == 0 and moved[model.lip_ids].max() > 0  # only lips move
        if stage == "detail":
            assert out.displacement.shape == (b, t, 1, u, u)
            assert out.normals_detail.shape == (b, t, 3, s, s)
        losses = _losses(model, batch, out)
        assert set(losses) - {"total"} == expected[stage], stage
        assert all(torch.isfinite(x) for x in losses.values())
        losses["total"].backward()
        trainable = {"coarse": [model.coarse, model.expression], "lip": [model.lip], "detail": [model.detail]}[stage]
        for m in trainable:
            for name, p in m.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{stage}: {name} got no gradient"
        if stage != "coarse":  # earlier stages frozen
            assert all(not p.requires_grad for p in model.coarse.parameters())


def test_lip_offsets_follow_head_rotation(face_model):
    """Offsets are predicted in the canonical frame: rotating the head rotates the offsets with it."""
    cfg = AVFaceConfig.tiny()
    model = AVFace(cfg, face_model, renderer=False).eval()
    model.set_stage("lip")
    b, t = 1, 2
    code = {"shape": torch.zeros(b, t, 100), "expression": torch.zeros(b, t, 50), "jaw": torch.zeros(b, t, 3),
            "cam": torch.tensor([[[7.0, 0, 0]]]).expand(b, t, 3), "albedo": torch.zeros(b, t, 50),
            "light": torch.zeros(b, t, 9, 3)}
    audio = torch.randn(b, t, 16, cfg.audio_dim, generator=torch.Generator().manual_seed(0))
    res = []
    for yaw in (0.0, 0.5):
        c = AVFaceOutput(**code, global_pose=torch.tensor([[[0.0, yaw, 0.0]]]).expand(b, t, 3))
        with torch.no_grad():
            res.append(model.refine_lips(model.decode(c), audio, None))
    assert torch.allclose(res[0].lip_offsets, res[1].lip_offsets, atol=1e-6)
    from avface.face_model.lbs import batch_rodrigues

    r = batch_rodrigues(torch.tensor([[0.0, 0.5, 0.0]]))[0]
    d0 = res[0].vertices - res[0].vertices_coarse
    d1 = res[1].vertices - res[1].vertices_coarse
    assert torch.allclose(d1, d0 @ r.T, atol=1e-6)


def test_lip_stage_frame_removes_the_coarse_pose_and_camera_error(face_model):
    """The lip stage's terms see the mesh through a camera re-fitted to the rigid landmarks (lip_frame
    "landmarks"): with the true face under a wrong head pose and camera, the re-fitted lip landmarks land on the
    image's, while the model's own frame misses them by several pixels."""
    from avface.render.cameras import orthographic_project, pixels_to_ndc

    cfg = AVFaceConfig.tiny()
    model = AVFace(cfg, face_model, renderer=False).eval()
    model.set_stage("lip")
    b, t = 2, 2
    g = torch.Generator().manual_seed(3)
    shape, pose = 0.5 * torch.randn(b * t, 100, generator=g), 0.1 * torch.randn(b * t, 3, generator=g)
    jaw = torch.tensor([[0.15, 0.0, 0.0]]).expand(b * t, 3)
    cam = torch.tensor([[7.0, 0.01, -0.02]]).expand(b * t, 3)
    with torch.no_grad():
        lmk = orthographic_project(face_model(shape=shape, global_pose=pose, jaw_pose=jaw).landmarks68_dynamic, cam)
    s = cfg.image_size
    batch = Batch(images=torch.zeros(b, t, 3, s, s), audio=None, landmarks=((lmk[..., :2] + 1) * s / 2).reshape(
        b, t, 68, 2), landmarks_valid=torch.ones(b, t, dtype=torch.bool))
    code = AVFaceOutput(shape=shape.reshape(b, t, -1), expression=torch.zeros(b, t, 50), jaw=jaw.reshape(b, t, 3),
                        global_pose=(pose + torch.tensor([0.08, -0.1, 0.05])).reshape(b, t, 3),
                        cam=torch.tensor([7.6, 0.0, 0.01]).expand(b, t, 3), albedo=torch.zeros(b, t, 50),
                        light=torch.zeros(b, t, 9, 3))
    with torch.no_grad():
        out = model.decode(code)
        refit = model.refit_frame(batch, out)
    gt = pixels_to_ndc(batch.landmarks, (s, s))
    lips = slice(48, 68)
    own = (out.landmarks2d[..., lips, :] - gt[..., lips, :]).norm(dim=-1).mean() * s / 2
    fitted = (refit.landmarks2d[..., lips, :] - gt[..., lips, :]).norm(dim=-1).mean() * s / 2
    assert own > 1.0 and fitted < 0.02, (own.item(), fitted.item())  # pixels at 64 px
    # rotated as one rigid body: the lip offsets' frame (vertices and root turn together)
    d0 = (out.vertices - out.root[:, :, None]).norm(dim=-1)
    torch.testing.assert_close((refit.vertices - refit.root[:, :, None]).norm(dim=-1), d0, atol=1e-6, rtol=0)


def test_sixteen_frame_window_with_occluded_frame_full_model_finite(face_model):
    cfg = AVFaceConfig.tiny()
    model = AVFace(cfg, face_model).eval()
    model.set_stage("detail")  # the full model: coarse, lip refinement, fine stage
    batch = _batch(cfg, face_model, b=1, t=16, seed=2)
    batch.images[:, 5] = 0.3  # the whole frame covered
    batch.video_valid = torch.ones(1, 16, dtype=torch.bool)
    batch.video_valid[:, 5] = False
    occ = torch.zeros(1, 16, cfg.image_size, cfg.image_size)
    occ[:, 5] = 1
    batch.occlusion_mask = occ
    with torch.no_grad():
        out = model(batch)
        losses = _losses(model, batch, out)
    for k, v in out.tensors().items():
        assert torch.isfinite(v).all(), k
    assert all(torch.isfinite(v) for v in losses.values())


def test_tiny_coarse_stage_reduces_landmark_loss(face_model):
    torch.manual_seed(0)
    cfg = AVFaceConfig.tiny()
    cfg = dataclasses.replace(cfg, stages=("coarse",))
    model = AVFace(cfg, face_model, renderer=False).train()
    batch = _batch(cfg, face_model, b=2, t=4, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    hist = []
    for step in range(25):
        out = model(batch, generator=torch.Generator().manual_seed(step))
        losses = _losses(model, batch, out)
        hist.append(losses["landmark"].item())
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    assert hist[-1] < 0.5 * hist[0], hist


def _enter_lip_stage_training(model: AVFace, order: str) -> None:
    """Select the lip stage and train mode in either call order (the result must not depend on it)."""
    if order == "stage_then_train":
        model.set_stage("lip")
        model.train()
    else:
        model.train()
        model.set_stage("lip")


def test_frozen_stages_keep_their_batchnorm_statistics(face_model):
    """set_stage freezes the earlier networks: training the later stage must not move their BatchNorm running
    statistics either (DECA keeps its frozen coarse encoder in eval mode), whichever of train()/set_stage() is
    called last; the trainable stage's BatchNorms still update."""
    cfg = AVFaceConfig.tiny()
    cfg = dataclasses.replace(cfg, stages=("coarse", "lip"))
    model = AVFace(cfg, face_model, renderer=False)
    batch = _batch(cfg, face_model, b=1, t=2, seed=3)
    for order in ("stage_then_train", "train_then_stage"):
        _enter_lip_stage_training(model, order)
        before = {k: v.clone() for k, v in model.coarse.state_dict().items() if "running" in k}
        before.update({"e." + k: v.clone() for k, v in model.expression.state_dict().items() if "running" in k})
        model(batch)
        after = {k: v for k, v in model.coarse.state_dict().items() if "running" in k}
        after.update({"e." + k: v for k, v in model.expression.state_dict().items() if "running" in k})
        assert before and all(torch.equal(before[k], after[k]) for k in before), order
    model.set_stage("coarse")
    model.train()
    bn = model.coarse.backbone.bn1.running_mean.clone()
    model(batch)
    assert not torch.equal(bn, model.coarse.backbone.bn1.running_mean)


def test_frozen_batchnorm_trains_the_affine_weights_on_eval_mode_statistics(face_model):
    """freeze_batchnorm: in train mode the stage's BatchNorms keep their running statistics and normalise with
    them (the output equals the eval-mode one), their weights still get gradients; unfreezing restores train mode."""
    cfg = AVFaceConfig.tiny()
    cfg.expression = dataclasses.replace(cfg.expression, modality_dropout=False)
    model = AVFace(cfg, face_model, renderer=False, stage="coarse")
    batch = _batch(cfg, face_model, b=2, t=2, seed=4)
    model.train()
    model(batch)  # move the running statistics away from their init, so eval differs from a fresh net
    model.freeze_batchnorm(True)
    assert model.training
    bn = model.coarse.backbone.bn1
    stats = bn.running_mean.clone()
    out = model(batch)
    assert torch.equal(stats, bn.running_mean)
    with torch.no_grad():
        ref = model.eval()(batch)
    model.train()
    assert torch.allclose(out.global_pose, ref.global_pose, atol=1e-6)
    assert torch.allclose(out.expression, ref.expression, atol=1e-6)
    out.global_pose.square().sum().backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    model.freeze_batchnorm(False)
    assert bn.training
    model(batch)
    assert not torch.equal(stats, bn.running_mean)


def test_canonical_vertices_are_the_face_without_its_head_pose(face_model):
    cfg = AVFaceConfig.tiny()
    model = AVFace(cfg, face_model, renderer=False, stage="coarse").eval()
    with torch.no_grad():
        out = model(_batch(cfg, face_model, b=2, t=2, seed=5))
        canon = model.canonical_vertices(out)
        still = model.decode(out.replace(global_pose=torch.zeros_like(out.global_pose)))
        turned = model.canonical_vertices(out.replace(global_pose=out.global_pose + 0.3))
    assert canon.shape == out.vertices.shape
    assert torch.allclose(canon, still.vertices, atol=1e-7)
    assert torch.allclose(canon, turned, atol=1e-7)  # the head pose does not enter
    assert not torch.allclose(canon, out.vertices, atol=1e-5)


def test_lip_stage_trains_on_every_window_despite_modality_dropout(face_model):
    """Modality dropout belongs to training the expression branch. Once it is frozen (lip stage), every window
    keeps its audio, so the lip refiner gets a gradient from every window, in either call order."""
    cfg = AVFaceConfig.tiny()
    cfg = dataclasses.replace(cfg, stages=("coarse", "lip"))
    cfg.expression = dataclasses.replace(cfg.expression, modality_dropout=True, p_drop_audio=1.0, p_drop_video=0.0,
                                         allow_both_dropped=True)
    model = AVFace(cfg, face_model)
    batch = _batch(cfg, face_model, b=2, t=2, seed=5)
    model.train()
    assert not model(batch).audio_keep.any()  # coarse stage: dropout active (p = 1 drops every window)
    for order in ("stage_then_train", "train_then_stage"):
        _enter_lip_stage_training(model, order)
        model.zero_grad(set_to_none=True)
        out = model(batch)
        assert out.audio_keep.all(), order
        _losses(model, batch, out)["total"].backward()
        grads = [p.grad for p in model.lip.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), order


def test_set_stage_trains_exactly_its_networks_and_adam_leaves_frozen_ones_bit_identical(face_model, tmp_path):
    """A new model is in stage "coarse" with the later stages frozen; each stage's optimiser gets exactly that
    stage's parameters (Adam, lr 1e-4, weight decay 5e-4, paper 3.5) and one step leaves every other parameter,
    including frozen pretrained perceptual networks, bit-identical."""
    from avface.models.perceptual import vgg19_features_to_relu4_2

    vgg = tmp_path / "vgg19.pth"
    torch.save({"features." + k: v for k, v in vgg19_features_to_relu4_2().state_dict().items()}, vgg)
    cfg = dataclasses.replace(AVFaceConfig.tiny(), vgg19_weights=str(vgg))
    cfg.expression = dataclasses.replace(cfg.expression, modality_dropout=False)
    model = AVFace(cfg, face_model).train()
    assert model.stage == "coarse"
    assert not any(p.requires_grad for m in (model.lip, model.detail) for p in m.parameters())
    assert model.mrf_loss.available
    batch = _batch(cfg, face_model, b=1, t=2, seed=4)
    groups = {"coarse": [model.coarse, model.expression], "lip": [model.lip], "detail": [model.detail]}
    for stage, mods in groups.items():
        model.set_stage(stage)
        expected = {id(p) for m in mods for p in m.parameters()}
        opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-4, weight_decay=5e-4)
        got = [id(p) for g in opt.param_groups for p in g["params"]]
        assert len(got) == len(set(got)) and set(got) == expected, stage
        assert all(p.requires_grad == (id(p) in expected) for p in model.parameters()), stage
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad()
        _losses(model, batch, model(batch))["total"].backward()
        opt.step()
        for n, p in model.named_parameters():
            if id(p) in expected:
                continue
            assert torch.equal(p, before[n]), f"{stage}: frozen {n} moved"
            assert p.grad is None, f"{stage}: frozen {n} got a gradient"
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if id(p) in expected), stage


def test_trainable_state_dict_has_every_stage_and_no_pretrained_perceptual_net(face_model, tmp_path):
    from avface.models.perceptual import vgg19_features_to_relu4_2

    vgg = tmp_path / "vgg19.pth"
    torch.save({"features." + k: v for k, v in vgg19_features_to_relu4_2().state_dict().items()}, vgg)
    cfg = dataclasses.replace(AVFaceConfig.tiny(), vgg19_weights=str(vgg))
    model = AVFace(cfg, face_model)
    sd = model.trainable_state_dict()
    assert {k.split(".")[0] for k in sd} == {"coarse", "expression", "lip", "detail"}
    assert not any(k.startswith(("mrf_loss", "identity_loss", "face_model", "renderer")) for k in sd)
    assert not any(id(p) in {id(q) for q in model.mrf_loss.parameters()} for p in model.trainable_parameters())
    path = tmp_path / "trainable.pt"
    torch.save(sd, path)
    other = AVFace(cfg, face_model)
    other.load_trainable_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(v, other.trainable_state_dict()[k]) for k, v in sd.items())
    with pytest.raises(ValueError, match="missing"):
        other.load_trainable_state_dict({k: v for k, v in sd.items() if not k.startswith("lip.")})


# ------------------------------------------------------------------------------------------ loss contract
# What each weighted term must train, per stage (L_lip = L_coarse + lambda_n lip normals: the coarse regularisers
# are in the lip stage's total but have nothing to train there).
_TRAINS = {
    "coarse": {"landmark": "coarse", "eye": "coarse", "photometric": "coarse", "identity": "coarse",
               "shape_consistency": "coarse", "reg_shape": "coarse", "reg_albedo": "coarse", "reg_light": "coarse",
               "reg_expression": "expression", "mouth_closure": "expression", "lip_corner": "expression"},
    "lip": {"landmark": "lip", "mouth_closure": "lip", "lip_corner": "lip", "photometric": "lip",
            "normals_lip": "lip"},
    "detail": {"photometric_detail": "detail", "normals": "detail", "mrf": "detail", "symmetry": "detail",
               "displacement": "detail"},
}


def _doubled(batch: Batch) -> Batch:
    """The same windows twice: a batch of 2B."""
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return Batch(**{k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in fields.items()})


@pytest.fixture(scope="module")
def perceptual_model(face_model, tmp_path_factory) -> AVFace:
    """Tiny model with every loss term present: VGG19 and a small face-recognition net, random weights written
    here (loaded through the real weights_only path)."""
    from avface.models.blocks import ResNet
    from avface.models.config import BackboneConfig
    from avface.models.perceptual import IdentityLoss, vgg19_features_to_relu4_2

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save({"features." + k: v for k, v in vgg19_features_to_relu4_2().state_dict().items()}, d / "vgg19.pth")
    small = BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem=8)
    torch.save(ResNet(small).state_dict(), d / "face_rec.pth")
    cfg = dataclasses.replace(AVFaceConfig.tiny(), vgg19_weights=str(d / "vgg19.pth"))
    model = AVFace(cfg, face_model)
    model.identity_loss = IdentityLoss(d / "face_rec.pth", backbone=small, input_size=64)
    return model.eval()


def test_every_weighted_term_is_batch_size_invariant(perceptual_model, face_model):
    model = perceptual_model
    batch = _batch(model.config, face_model, b=2, t=2, seed=7)
    batch.occlusion_mask = torch.zeros(2, 2, 64, 64)
    batch.occlusion_mask[:, :, 40:, :32] = 1.0  # a hand over one cheek: the occlusion path of every term
    for stage in MODEL_STAGES:
        model.set_stage(stage)
        with torch.no_grad():
            one = _losses(model, batch, model(batch))
            two = _losses(model, _doubled(batch), model(_doubled(batch)))
        assert set(one) - {"total"} == set(_TRAINS[stage]) | ({"reg_shape", "reg_expression", "reg_albedo",
                                                               "reg_light", "eye", "shape_consistency",
                                                               "identity"} if stage == "lip" else set()), stage
        for k in one:
            assert torch.allclose(one[k], two[k], rtol=1e-5, atol=1e-8), (stage, k, one[k].item(), two[k].item())


def test_every_weighted_term_trains_what_it_should(perceptual_model, face_model):
    model = perceptual_model
    batch = _batch(model.config, face_model, b=2, t=2, seed=8)
    for stage in MODEL_STAGES:
        model.set_stage(stage)
        losses = _losses(model, batch, model(batch))
        for term, net in _TRAINS[stage].items():
            model.zero_grad(set_to_none=True)
            losses[term].backward(retain_graph=True)
            grad = sum(p.grad.abs().sum() for p in getattr(model, net).parameters() if p.grad is not None)
            assert torch.is_tensor(grad) and grad > 0, f"{stage}: {term} gives no gradient to {net}"
            assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    model.zero_grad(set_to_none=True)


def test_symmetry_acts_on_the_hidden_uv_region_only(perceptual_model, face_model):
    """The symmetry term sees the texels the image does not show (back-facing / occluded), not the visible ones."""
    model = perceptual_model
    model.set_stage("detail")
    batch = _batch(model.config, face_model, b=1, t=1, seed=9)
    out = model(batch)
    vis, um = out.uv_visible[0, 0], out.uv_mask[0, 0]
    assert 0 < (vis * um).sum() < um.sum()  # some texels seen, some hidden
    model.zero_grad(set_to_none=True)
    d = out.displacement.detach().requires_grad_(True)
    from avface.losses import maps as M

    nonvis = M.nonvisible_region(out.uv_visible[0], out.uv_mask[0])
    M.symmetry_loss(d[0] / 0.01, nonvis, out.uv_mask[0]).backward()
    g = d.grad[0, 0, 0].abs()
    assert g[nonvis[0, 0] > 0].sum() > 0 and g[nonvis[0, 0] == 0].sum() == 0

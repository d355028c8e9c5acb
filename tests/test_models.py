"""AVFace networks: shapes, gradients, modality dropout, occluded frames, checkpoint loaders, config mirror."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from avface.models import (
    AVFaceConfig,
    CoarseEncoder,
    DetailUNet,
    ExpressionJawEncoder,
    LipRefiner,
    displacement_to_detail,
    load_deca_encoder,
    load_normals_net,
)
from avface.models.checkpoints import DECA_OFFSETS, UnsafeCheckpointError, safe_load

ROOT = Path(__file__).resolve().parents[1]


def _inputs(cfg: AVFaceConfig, b: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return (torch.rand(b, t, 3, s, s, generator=g), torch.randn(b, t, cfg.audio_window, cfg.audio_dim, generator=g))


def _check_shapes(cfg: AVFaceConfig, b: int, t: int) -> None:
    images, audio = _inputs(cfg, b, t)
    ce = CoarseEncoder(cfg.coarse).eval()
    ej = ExpressionJawEncoder(cfg.expression, cfg.audio_dim).eval()
    lr = LipRefiner(cfg.lip, 37, cfg.audio_dim).eval()
    du = DetailUNet(cfg.detail, cfg.audio_dim).eval()
    u = cfg.detail.uv_size
    with torch.no_grad():
        c = ce(images)
        assert c.raw.shape == (b, t, 183)
        assert (c.shape.shape, c.albedo.shape, c.light.shape) == ((b, t, 100), (b, t, 50), (b, t, 9, 3))
        assert (c.global_pose.shape, c.cam.shape) == ((b, t, 3), (b, t, 3))
        e = ej(images, audio)
        assert (e.expression.shape, e.jaw.shape) == ((b, t, 50), (b, t, 3))
        assert e.f_audio.shape == (b, t, cfg.expression.audio.embed)
        assert e.f_video.shape == (b, t, cfg.expression.video_embed)
        off = lr(torch.randn(b, t, 37, 3) * 0.02, audio)
        assert off.shape == (b, t, 37, 3)
        d = du(torch.rand(b * t, cfg.detail.in_channels, u, u), audio.reshape(b * t, cfg.audio_window, -1))
        assert d.shape == (b * t, 1, u, u)
        assert d.abs().max() <= cfg.detail.displacement_scale
    for x in (c.raw, e.expression, off, d):
        assert torch.isfinite(x).all()


def test_shapes_tiny():
    _check_shapes(AVFaceConfig.tiny(), b=2, t=4)


def test_shapes_paper_small_batch():
    cfg = AVFaceConfig.paper()
    assert cfg.image_size == 224 and cfg.coarse.backbone.out_channels == 2048
    _check_shapes(cfg, b=1, t=2)


def test_paper_backbone_is_resnet50_layout():
    """Our ResNet with the paper config has exactly torchvision ResNet-50's parameter names and shapes (minus fc),
    so DECA's encoder (a torchvision-layout ResNet-50) maps 1:1."""
    import torchvision

    ours = CoarseEncoder(AVFaceConfig.paper().coarse).backbone.state_dict()
    ref = {k: v for k, v in torchvision.models.resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("modalities,temporal", [("av", True), ("audio", True), ("video", False), ("av", False)])
def test_gradients_reach_every_parameter(modalities, temporal):
    cfg = AVFaceConfig.tiny()
    cfg.expression = dataclasses.replace(cfg.expression, modalities=modalities, temporal=temporal,
                                         modality_dropout=False)
    images, audio = _inputs(cfg, 2, 3)
    mods = [CoarseEncoder(cfg.coarse), ExpressionJawEncoder(cfg.expression, cfg.audio_dim),
            LipRefiner(cfg.lip, 11, cfg.audio_dim), DetailUNet(cfg.detail, cfg.audio_dim)]
    c = mods[0](images)
    e = mods[1](images, audio)
    off = mods[2](torch.randn(2, 3, 11, 3) * 0.02, audio)
    u = cfg.detail.uv_size
    d = mods[3](torch.rand(6, 3, u, u), audio.reshape(6, 16, -1))
    loss = c.raw.square().mean() + e.expression.square().mean() + e.jaw.square().mean() + off.square().mean() \
        + d.square().mean()
    loss.backward()
    for m in mods:
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{type(m).__name__}.{name} got no gradient"
    if modalities == "audio":
        assert not hasattr(mods[1], "video_backbone")
    if modalities == "video":
        assert not hasattr(mods[1], "audio_encoder")


def test_modality_dropout_zeros_exactly_the_drawn_embeddings():
    cfg = AVFaceConfig.tiny()
    ej = ExpressionJawEncoder(cfg.expression, cfg.audio_dim).train()
    images, audio = _inputs(cfg, 8, 3)
    keep_a, keep_v = ej.dropout_masks(8, 3, torch.device("cpu"), torch.Generator().manual_seed(3))
    out = ej(images, audio, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.audio_keep, keep_a) and torch.equal(out.video_keep, keep_v)
    assert 0 < keep_a.sum() < keep_a.numel() or 0 < keep_v.sum() < keep_v.numel()
    za = out.f_audio.abs().sum(-1) == 0
    zv = out.f_video.abs().sum(-1) == 0
    assert torch.equal(za, keep_a == 0) and torch.equal(zv, keep_v == 0)
    assert not (za & zv).any()  # allow_both_dropped=False: one modality always survives

    # Marginal rates: with "never both", P(drop a) = 0.4 - 0.5 * 0.4 * 0.5 = 0.3, P(drop v) = 0.4.
    ka, kv = ej.dropout_masks(20000, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert abs((1 - ka.mean()).item() - 0.3) < 0.02 and abs((1 - kv.mean()).item() - 0.4) < 0.02
    ej.cfg = dataclasses.replace(ej.cfg, allow_both_dropped=True)
    ka, kv = ej.dropout_masks(20000, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert abs((1 - ka.mean()).item() - 0.4) < 0.02 and abs((1 - kv.mean()).item() - 0.5) < 0.02

    # Inference: no dropout; a missing modality (None, or invalid frames) is the zero embedding.
    ej.eval()
    with torch.no_grad():
        full = ej(images, audio)
        assert (full.f_audio.abs().sum(-1) > 0).all() and (full.f_video.abs().sum(-1) > 0).all()
        no_audio = ej(images, None)
        assert (no_audio.f_audio == 0).all() and torch.equal(no_audio.f_video, full.f_video)
        valid = torch.ones(8, 3, dtype=torch.bool)
        valid[:, 1] = False
        part = ej(images, audio, video_valid=valid)
        assert (part.f_video[:, 1] == 0).all() and torch.equal(part.f_video[:, 0], full.f_video[:, 0])
        assert torch.equal(part.f_audio, full.f_audio)


def test_sixteen_frames_with_one_fully_occluded_frame_are_finite():
    cfg = AVFaceConfig.tiny()
    images, audio = _inputs(cfg, 2, 16)
    images[:, 7] = 0.0  # a hand covering the whole frame: no face signal at all
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[:, 7] = False
    ce, ej = CoarseEncoder(cfg.coarse).eval(), ExpressionJawEncoder(cfg.expression, cfg.audio_dim).eval()
    with torch.no_grad():
        for vv in (None, valid):
            c = ce(images)
            e = ej(images, audio, video_valid=vv)
            for x in (c.raw, e.expression, e.jaw):
                assert torch.isfinite(x).all()
    # the transformer mixes frames: the occluded frame's code depends on its neighbours (not so without it)
    for temporal in (True, False):
        enc = CoarseEncoder(dataclasses.replace(cfg.coarse, temporal=temporal)).eval()
        x = images.clone().requires_grad_(True)
        enc(x).raw[:, 7].sum().backward()
        neighbour = x.grad[:, 6].abs().sum()
        assert (neighbour > 0) if temporal else (neighbour == 0)


def test_detail_geometry_zero_displacement_keeps_surface():
    # a sphere-like bump as a UV position map; D = 0 must give back the positions and agreeing normals
    u = 32
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, u), torch.linspace(-1, 1, u), indexing="ij")
    z = 0.3 * torch.exp(-(xs**2 + ys**2))
    pos = torch.stack([xs, -ys, z])[None]  # row 0 = top (v = 1)
    from avface.models.detail import position_map_normals

    n_c = position_map_normals(pos)
    n_c = n_c * torch.sign(n_c[:, 2:3])  # outward (+z)
    v_d, n_d = displacement_to_detail(pos, n_c, torch.zeros(1, 1, u, u))
    assert torch.allclose(v_d, pos)
    assert torch.allclose(n_d, n_c, atol=1e-5)
    bumpy = 0.01 * torch.randn(1, 1, u, u, generator=torch.Generator().manual_seed(0))
    _, n_b = displacement_to_detail(pos, n_c, bumpy)
    assert (n_b - n_c).abs().mean() > 1e-3 and (n_b * n_c).sum(1).min() > 0


# ------------------------------------------------------------------------------------- checkpoint loaders
def _deca_style_checkpoint(cfg, tmp_path: Path) -> tuple[Path, dict]:
    """A file laid out like DECA's deca_model.tar: {'E_flame': {'encoder.*', 'layers.0.*', 'layers.2.*'}, ...}."""
    donor = CoarseEncoder(cfg.coarse)
    g = torch.Generator().manual_seed(1)
    e_flame = {"encoder." + k: v.clone() for k, v in donor.backbone.state_dict().items()}
    e_flame["layers.0.weight"] = torch.randn(cfg.coarse.embed_hidden, donor.backbone.out_channels, generator=g)
    e_flame["layers.0.bias"] = torch.randn(cfg.coarse.embed_hidden, generator=g)
    e_flame["layers.2.weight"] = torch.randn(236, cfg.coarse.embed_hidden, generator=g)
    e_flame["layers.2.bias"] = torch.randn(236, generator=g)
    path = tmp_path / "deca_model.tar"
    torch.save({"E_flame": e_flame, "E_detail": {"x": torch.zeros(1)}, "global_step": 7}, path)
    return path, e_flame


def test_deca_loader_maps_encoder_and_code_rows(tmp_path):
    cfg = AVFaceConfig.tiny()
    path, e_flame = _deca_style_checkpoint(cfg, tmp_path)
    ce = CoarseEncoder(cfg.coarse)
    rep = load_deca_encoder(ce, path)
    assert not rep.mismatched and not rep.unexpected
    assert all(k.startswith(("transformer.", "head.")) for k in rep.missing)  # only the new temporal parts
    assert torch.equal(ce.backbone.conv1.weight, e_flame["encoder.conv1.weight"])
    w = ce.layers[2].weight
    o = DECA_OFFSETS
    assert torch.equal(w[:100], e_flame["layers.2.weight"][:100])  # shape
    assert torch.equal(w[100:150], e_flame["layers.2.weight"][o["tex"]:o["tex"] + 50])  # albedo
    assert torch.equal(w[150:177], e_flame["layers.2.weight"][o["light"]:o["light"] + 27])  # light
    assert torch.equal(w[177:180], e_flame["layers.2.weight"][o["global_pose"]:o["global_pose"] + 3])
    assert torch.equal(w[180:183], e_flame["layers.2.weight"][o["cam"]:o["cam"] + 3])
    # the per-frame embedding is now exactly DECA's code (rows selected) for each frame
    ce.eval()
    x = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        feats = ce.backbone(x.flatten(0, 1))
        deca = torch.relu(feats @ e_flame["layers.0.weight"].T + e_flame["layers.0.bias"])
        deca = deca @ e_flame["layers.2.weight"].T + e_flame["layers.2.bias"]
        assert torch.allclose(ce.embed(x).flatten(0, 1)[:, 180:183], deca[:, o["cam"]:o["cam"] + 3], atol=1e-4)
    # the video backbone of the expression branch can start from DECA's ResNet too
    ej = ExpressionJawEncoder(cfg.expression, cfg.audio_dim)
    rep2 = load_deca_encoder(ej, path)
    assert not rep2.missing and torch.equal(ej.video_backbone.conv1.weight, e_flame["encoder.conv1.weight"])


def test_unsafe_checkpoint_is_refused(tmp_path):
    path = tmp_path / "unsafe.tar"
    torch.save({"E_flame": {}, "cfg": Path("/x")}, path)  # pathlib object: needs full unpickling
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        safe_load(path)
    assert "cfg" in safe_load(path, allow_unsafe=True)


def test_normals_net_loader(tmp_path):
    """A checkpoint with Abrevaya et al.'s ResNetUNet names (base_model.* + layerK.* aliases, *_2 branch,
    3-channel conv_last) maps onto our DetailUNet; the extra audio channel starts at zero."""
    cfg = AVFaceConfig.tiny()
    donor = DetailUNet(dataclasses.replace(cfg.detail, use_audio=False), cfg.audio_dim)
    sd = {}
    for k, v in donor.state_dict().items():
        if k.startswith("encoder."):
            sd["base_model." + k[len("encoder."):]] = v.clone() + 0.5
        elif k.startswith("conv_last."):
            sd[k] = torch.ones(3, *v.shape[1:]) if v.dim() > 1 else torch.ones(3)
        else:
            sd[k] = v.clone() + 0.5
    sd["base_model.fc.weight"] = torch.zeros(10, donor.encoder.out_channels)
    sd["layer0.0.weight"] = sd["base_model.conv1.weight"]
    sd["conv_up3_2.0.weight"] = torch.zeros(2, 2, 3, 3)
    path = tmp_path / "model.pth"
    torch.save(sd, path)
    net = DetailUNet(cfg.detail, cfg.audio_dim)  # with the audio channel after stage 3
    rep = load_normals_net(net, path)
    assert any("conv_last.weight" in m for m in rep.mismatched)
    assert "conv_up3_2.0.weight" in rep.unexpected and "base_model.fc.weight" in rep.unexpected
    assert set(rep.missing) <= {"conv_last.weight", "conv_last.bias", "audio_fc.weight", "audio_fc.bias"}
    c3 = sd["base_model.layer4.0.conv1.weight"].shape[1]
    w = net.encoder.layer4[0].conv1.weight
    assert w.shape[1] == c3 + 1
    assert torch.equal(w[:, :c3], sd["base_model.layer4.0.conv1.weight"]) and (w[:, c3:] == 0).all()
    assert torch.equal(net.conv_up2[0].weight, sd["conv_up2.0.weight"])


# ------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_model_group_option_is_the_preset(name):
    """Hydra's ``model`` group (registered by ``avface.configs.register_all``) holds exactly the Python presets:
    composed with ``+model=<name>``, turned into a plain dict and rebuilt, it is
    ``AVFaceConfig.<name>()``, field by field."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from avface.configs import register_all

    register_all()
    cfg = getattr(AVFaceConfig, name)()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        node = compose(overrides=[f"+model={name}"]).model
    y = OmegaConf.to_container(node, resolve=True)
    assert y == cfg.to_dict()
    assert AVFaceConfig.from_dict(y) == cfg
    assert AVFaceConfig.from_dict(node) == cfg
    assert AVFaceConfig.from_dict(OmegaConf.create(y)) == cfg
    with pytest.raises(ValueError, match="bogus"):
        AVFaceConfig.from_dict({**y, "bogus": 1})


def test_paper_config_numbers():
    cfg = AVFaceConfig.paper()
    assert cfg.coarse.code_dim == 183 and cfg.window == 16
    for tr in (cfg.coarse.transformer, cfg.expression.transformer):
        assert (tr.layers, tr.heads, tr.ff, tr.dropout) == (3, 4, 256, 0.0)
    assert len(cfg.coarse.head.hidden) + 1 == 3 and len(cfg.expression.head.hidden) + 1 == 3
    assert cfg.expression.audio.embed == 64 and cfg.expression.video_embed == 64
    assert (cfg.expression.p_drop_audio, cfg.expression.p_drop_video) == (0.4, 0.5)
    w = cfg.losses
    assert (w.lip, w.reg_shape, w.normals, w.mrf, w.symmetry, w.displacement) == (0.5, 1e-4, 10, 5e-2, 5e-3, 5e-3)


def test_detail_normals_at_uv_chart_border_ignore_texels_outside_the_mask():
    """Texels outside the UV mask hold position 0 (no surface): finite differences at a chart's border must not
    use them. A flat patch off the origin (z = 0.5) with D = 0 keeps its normal (0, 0, 1) up to the border."""
    u = 16
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, u), torch.linspace(-1, 1, u), indexing="ij")
    mask = torch.zeros(1, 1, u, u)
    mask[..., 3:13, 4:12] = 1
    pos = torch.stack([xs, -ys, torch.full_like(xs, 0.5)])[None] * mask  # zeros outside, like uv_maps
    n_c = torch.zeros(1, 3, u, u)
    n_c[:, 2] = 1.0
    _, n_d = displacement_to_detail(pos, n_c, torch.zeros(1, 1, u, u), mask)
    assert torch.allclose(n_d, n_c, atol=1e-6)


@pytest.mark.parametrize("scale", [8.0, 5.6])
def test_coarse_camera_scale_starts_at_the_configured_value(scale):
    """The trainer sets the initial camera scale from the data (CoarseConfig.init_cam_scale)."""
    cfg = AVFaceConfig.tiny()
    torch.manual_seed(0)
    ce = CoarseEncoder(dataclasses.replace(cfg.coarse, init_cam_scale=scale)).eval()
    with torch.no_grad():
        cam = ce(_inputs(cfg, 2, 3)[0]).cam
    assert torch.allclose(cam[..., 0], torch.full((2, 3), scale), atol=0.05)


def test_audio_encoder_standardises_its_input_with_the_configured_statistics():
    """E_a with (mean, std) computes exactly what E_a without them computes on standardised features; the
    statistics are config values, not weights (the state dict is unchanged, so older checkpoints still load)."""
    from avface.models.encoders import AudioEncoder

    cfg = AVFaceConfig.tiny().expression.audio
    gen = torch.Generator().manual_seed(0)
    mean = (torch.randn(80, generator=gen) * 3 - 4).tolist()
    std = (torch.rand(80, generator=gen) * 2 + 0.5).tolist()
    torch.manual_seed(0)
    raw = AudioEncoder(80, 16, cfg)
    torch.manual_seed(0)
    standardised = AudioEncoder(80, 16, cfg, mean, std)
    assert raw.state_dict().keys() == standardised.state_dict().keys()
    audio = torch.randn(2, 3, 16, 80, generator=gen) * 4 - 3
    expected = raw((audio - torch.tensor(mean)) / torch.tensor(std))
    assert torch.allclose(standardised(audio), expected, atol=1e-5)
    assert not torch.allclose(raw(audio), expected, atol=1e-3)
    with pytest.raises(ValueError, match="80 values each"):
        AudioEncoder(80, 16, cfg, mean[:29], std[:29])
    with pytest.raises(ValueError, match="positive"):
        AudioEncoder(80, 16, cfg, mean, [0.0] * 80)
    # the whole model passes its config's statistics to both audio encoders (E_a and the lip refiner's)
    from avface.face_model import FaceModel, load_face_model
    from avface.models.avface import AVFace

    mcfg = dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80, audio_mean=mean, audio_std=std)
    model = AVFace(mcfg, FaceModel(load_face_model(None)), renderer=False)
    for enc in (model.expression.audio_encoder, model.lip.audio_encoder):
        assert torch.equal(enc.standardize.mean, torch.tensor(mean))

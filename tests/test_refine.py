"""Test-time fitting to landmarks (:mod:`avface.inference.refine`): the landmark rig equals the face model, the fit
recovers a synthetic clip's known pose, camera, jaw and expression from its exact landmarks, frames without a face
keep the network's values, the reconstruction's hook works in frame pixels through the crop boxes, the ``refined``
flag survives the npz, and ``--refine none`` is the network alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from avface.face_model import FaceModel, load_face_model
from avface.face_model.flame import vertices2landmarks
from avface.face_model.lbs import batch_rodrigues
from avface.fitting.landmarks import (
    FitParams,
    RefineConfig,
    fit_landmarks,
    landmark_rig,
    lip_landmark_offsets,
    matrix_to_axis_angle,
    pixels_to_crop_ndc,
    rig_landmarks,
)
from avface.inference import ReconstructConfig, Reconstructor, load_reconstruction
from avface.inference.refine import refine_store
from avface.inference.windows import cached_codes, split_codes
from avface.io.media import write_mp4
from avface.models import AVFaceConfig
from avface.models.avface import AVFace
from avface.render.cameras import ndc_to_pixels, orthographic_project

T = 24


@pytest.fixture(scope="module")
def face_model() -> FaceModel:
    return FaceModel(load_face_model(None))


@pytest.fixture(scope="module")
def rig(face_model):
    return landmark_rig(face_model)


def synthetic_clip(t: int = T, seed: int = 0) -> FitParams:
    """Known parameters (1, t, k) of a talking, turning head: smooth expression and jaw, yaw up to 0.5 rad."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, t)
    phase = torch.rand(50, generator=g) * 6.28
    expression = (torch.randn(50, generator=g) * 0.6)[None] * torch.sin(4 * x[:, None] + phase[None])
    jaw = torch.zeros(t, 3)
    jaw[:, 0] = 0.12 + 0.08 * torch.sin(10 * x)
    pose = torch.stack([0.15 * torch.sin(3 * x), 0.5 * torch.sin(2 * x), 0.05 * x], -1)
    cam = torch.stack([6.5 + 0.4 * x, 0.01 * x, -0.01 + 0.005 * x], -1)
    shape = torch.randn(1, 100, generator=g).expand(t, 100)
    return FitParams(shape[None], expression[None], jaw[None], pose[None], cam[None])


def project(face_model, p: FitParams) -> torch.Tensor:
    """(1, T, 68, 2) NDC landmarks of ``p`` by the full face model (what a perfect detector would see)."""
    geo = face_model(shape=p.shape[0], expression=p.expression[0], global_pose=p.global_pose[0], jaw_pose=p.jaw[0])
    return orthographic_project(geo.landmarks68_dynamic, p.cam[0])[None, ..., :2]


def perturbed(p: FitParams, seed: int = 1) -> FitParams:
    """A start like a network's: pose off by ~0.1 rad, camera by 8 % and 0.02 m, jaw and expression noisy."""
    g = torch.Generator().manual_seed(seed)
    n = lambda x, s: x + s * torch.randn(x.shape, generator=g)  # noqa: E731
    return FitParams(shape=n(p.shape, 0.3), expression=n(p.expression, 0.4), jaw=n(p.jaw, 0.05),
                     global_pose=n(p.global_pose, 0.1), cam=p.cam * torch.tensor([1.08, 1.0, 1.0]) + 0.02)


def nme(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean landmark distance / outer-eye-corner distance of ``b``."""
    iod = (b[..., 36, :] - b[..., 45, :]).norm(dim=-1)
    return float(((a - b).norm(dim=-1).mean(-1) / iod).mean())


def test_rig_gives_the_face_models_landmarks(face_model, rig):
    p = synthetic_clip(8)
    geo = face_model(shape=p.shape[0], expression=p.expression[0], global_pose=p.global_pose[0], jaw_pose=p.jaw[0])
    lmk, root = rig_landmarks(rig, p.shape[0], p.expression[0], p.global_pose[0], p.jaw[0])
    assert torch.allclose(lmk, geo.landmarks68_dynamic, atol=1e-6)
    assert torch.allclose(root, geo.joints[:, 0], atol=1e-6)
    # the lip offsets move the landmarks as they move the mesh's vertices
    ids = face_model.region("lips")
    off = 0.002 * torch.randn(8, len(ids), 3, generator=torch.Generator().manual_seed(0))
    full = torch.zeros(8, face_model.num_vertices, 3).index_add(1, ids, off)
    moved = face_model(shape=p.shape[0], expression=p.expression[0])  # no pose: canonical frame
    ref = vertices2landmarks(moved.vertices + full, face_model.faces, face_model.lmk68_faces[None].expand(8, -1),
                             face_model.lmk68_bary[None].expand(8, -1, -1)) - moved.landmarks68
    assert torch.allclose(lip_landmark_offsets(face_model, off, ids), ref, atol=1e-7)
    assert lip_landmark_offsets(face_model, off, ids)[:, 48:68].abs().max() > 1e-4  # the lips' points move


def test_matrix_to_axis_angle_inverts_rodrigues():
    aa = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)) * 1.2
    aa = torch.cat([aa, torch.zeros(1, 3), torch.tensor([[0.0, 3.1, 0.0], [3.14159, 0.0, 0.0]])])
    back = matrix_to_axis_angle(batch_rodrigues(aa))
    assert torch.allclose(batch_rodrigues(back), batch_rodrigues(aa), atol=1e-4)


def test_fit_recovers_a_synthetic_clip_from_its_exact_landmarks(face_model, rig):
    truth = synthetic_clip()
    target = project(face_model, truth)
    start = perturbed(truth)
    # weak priors: with exact landmarks the data should win (the default's priors hold a network's values)
    cfg = RefineConfig(w_expression=1e-4, w_jaw=1e-3, w_shape=1e-4, w_smooth=0.0, iterations=60, max_eval=150)
    res = fit_landmarks(rig, start, target, torch.ones(1, T, dtype=torch.bool), cfg)
    assert res.refined.all()
    before, after = nme(project(face_model, start), target), nme(res.landmarks2d, target)
    assert before > 0.15 and after < 0.02, (before, after)
    assert torch.allclose(project(face_model, res.params), res.landmarks2d, atol=1e-5)
    p = res.params
    # pose within ~1.5 degrees (from ~6), camera scale within 3 % (from 8 %), translation within 3 mm
    pose_err = (batch_rodrigues(p.global_pose[0]) - batch_rodrigues(truth.global_pose[0])).norm(dim=(1, 2))
    assert pose_err.mean() < 0.03, pose_err.mean()
    assert ((p.cam[..., 0] / truth.cam[..., 0] - 1).abs().mean() < 0.03)
    assert (p.cam[..., 1:] - truth.cam[..., 1:]).abs().mean() < 3e-3
    assert (p.jaw - truth.jaw).abs().mean() < 0.5 * (start.jaw - truth.jaw).abs().mean()

    # expression: the mouth and eyes of the canonical face (no pose), which the landmarks see, much closer
    def canon(q: FitParams) -> torch.Tensor:
        return rig_landmarks(rig, truth.shape[0], q.expression[0], torch.zeros(T, 3), truth.jaw[0])[0][:, 36:]

    e0 = (canon(start) - canon(truth)).norm(dim=-1).mean()
    e1 = (canon(p) - canon(truth)).norm(dim=-1).mean()
    assert e1 < 0.5 * e0, (e0, e1)


def test_frames_without_a_face_keep_the_network_values(face_model, rig):
    truth = synthetic_clip(12)
    target = project(face_model, truth)
    start = perturbed(truth)
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[0, 3:6] = False
    target[0, 4] = float("nan")  # a missing detection may be anything: it must not leak into the fit
    res = fit_landmarks(rig, start, target, valid)
    assert res.refined.tolist() == [valid[0].tolist()]
    for f in dataclasses.fields(FitParams):
        got, was = getattr(res.params, f.name), getattr(start, f.name)
        assert torch.equal(got[0, 3:6], was[0, 3:6]), f.name
        assert torch.isfinite(got).all()
    assert not torch.allclose(res.params.cam[0, 6:], start.cam[0, 6:])
    # nothing detected at all: nothing refined, the start returned
    none = fit_landmarks(rig, start, target, torch.zeros(1, 12, dtype=torch.bool))
    assert not none.refined.any() and torch.equal(none.params.cam, start.cam)


def test_refine_store_fits_in_frame_pixels_through_the_crop_boxes(face_model):
    """The reconstruction's hook: landmarks in frame pixels, a moving crop box per frame, chunks of 10 frames;
    the fitted camera is in each crop's NDC, so mapping its landmarks through the box lands on the pixels."""
    m = 25
    truth = synthetic_clip(m, seed=3)
    ndc = project(face_model, truth)[0].numpy()  # in the crop's NDC
    boxes = np.stack([np.array([100.0, 50.0, 324.0, 274.0]) + np.array([1, 0.5, 1, 0.5]) * 3 * i
                      for i in range(m)]).astype(np.float32)
    side = (boxes[:, 2] - boxes[:, 0])[:, None, None]
    px = (ndc + 1) / 2 * side + boxes[:, None, :2]
    assert np.allclose(pixels_to_crop_ndc(px, boxes), ndc, atol=1e-5)
    start = perturbed(truth, seed=4)
    store = {k: getattr(start, k)[0].numpy().copy() for k in ("shape", "expression", "jaw", "global_pose", "cam")}
    store["albedo"] = np.zeros((m, 50), np.float32)
    before = {k: v.copy() for k, v in store.items()}
    detected = np.ones(m, bool)
    detected[[0, 13]] = False
    refined = refine_store(store, px.astype(np.float32), detected, boxes, face_model, chunk=10)
    assert refined.tolist() == detected.tolist()
    for k in store:
        assert np.array_equal(store[k][~detected], before[k][~detected]), k
    assert np.array_equal(store["albedo"], before["albedo"])
    fitted = FitParams(**{k: torch.as_tensor(store[k])[None] for k in ("shape", "expression", "jaw", "global_pose",
                                                                         "cam")})
    got = project(face_model, fitted)[0].numpy()
    got_px = (got + 1) / 2 * side + boxes[:, None, :2]
    iod = np.linalg.norm(px[:, 36] - px[:, 45], axis=-1)
    err = np.linalg.norm(got_px - px, axis=-1).mean(-1) / iod
    err0 = np.linalg.norm((project(face_model, start)[0].numpy() + 1) / 2 * side + boxes[:, None, :2] - px,
                          axis=-1).mean(-1) / iod
    assert err[detected].mean() < 0.05 < err0[detected].mean(), (err[detected].mean(), err0[detected].mean())


# ------------------------------------------------------------------------------------------------ reconstruction
@pytest.fixture(scope="module")
def coarse_model(face_model) -> AVFace:
    torch.manual_seed(0)
    m = AVFace(dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80, stages=("coarse",)), face_model,
               renderer=False)
    m.set_stage("coarse")
    return m.eval()


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    from skimage.data import astronaut

    from avface.data.testing import synthetic_audio

    img = astronaut()
    x = np.round(110 + 20 * np.sin(np.arange(20) / 6.0)).astype(int)
    frames = np.stack([img[40:232, xi:xi + 192] for xi in x])
    return write_mp4(tmp_path_factory.mktemp("refine") / "face.mp4", frames, 25.0, synthetic_audio(0.8, seed=1))


def test_reconstruct_refines_and_none_is_the_network_alone(coarse_model, face_video, tmp_path):
    """``refine=none``: exactly the network's per-frame parameters (its cached sliding windows on the same crops);
    ``refine=landmarks``: the detected frames fitted, closer to the detector's points, flagged and saved."""
    with Reconstructor.from_model(coarse_model, config=ReconstructConfig(progress=False, refine="none")) as r:
        plain = r.run(face_video)
        crops, audio = r.model_inputs(face_video)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        net = split_codes(cached_codes(coarse_model, images, torch.from_numpy(audio)), coarse_model)
    for k, key in (("shape", "shape"), ("expression", "expression"), ("jaw", "jaw_pose"),
                   ("global_pose", "global_pose"), ("cam", "cam")):
        assert np.allclose(getattr(plain, key), net[k].numpy(), atol=1e-5), k
    assert not plain.refined.any() and plain.meta["refine"] == "none"

    with Reconstructor.from_model(coarse_model, config=ReconstructConfig(progress=False, chunk=8)) as r:
        fitted = r.run(face_video)
    assert fitted.face_detected.all() and fitted.refined.all() and fitted.meta["refine"] == "landmarks"
    assert fitted.landmarks.shape == (fitted.num_frames, 68, 2)

    def pixel_nme(rec) -> float:
        fm = coarse_model.face_model
        with torch.no_grad():
            geo = fm(shape=torch.as_tensor(rec.shape), expression=torch.as_tensor(rec.expression),
                     global_pose=torch.as_tensor(rec.global_pose), jaw_pose=torch.as_tensor(rec.jaw_pose))
            ndc = orthographic_project(geo.landmarks68_dynamic, torch.as_tensor(rec.cam))[..., :2].numpy()
        box = rec.crop_box
        side = np.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], -1)[:, None]
        px = (ndc + 1) / 2 * side + box[:, None, :2]
        gt = fitted.landmarks
        iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
        return float((np.linalg.norm(px - gt, axis=-1).mean(-1) / iod).mean())

    assert pixel_nme(fitted) < 0.5 * pixel_nme(plain), (pixel_nme(fitted), pixel_nme(plain))
    # the overlay draws the detector's points (green) and the model's landmarks (magenta) over the frame
    from avface.inference.export import write_overlay_mp4
    from avface.io.video import read_video

    mp4 = write_overlay_mp4(fitted, coarse_model.face_model, face_video, tmp_path / "overlay.mp4")
    frame = np.asarray(read_video(mp4, max_frames=1)[0][0]).astype(int)
    left = frame[40:, :192]  # below the legend
    r, g, b = left[..., 0], left[..., 1], left[..., 2]
    green = (g > r + 60) & (g > b + 60)
    magenta = (r > g + 60) & (b > g + 60)
    assert green.sum() > 100 and magenta.sum() > 100, (green.sum(), magenta.sum())
    ys, xs = np.nonzero(green)
    pts = fitted.landmarks[0]
    assert abs(xs.mean() - pts[:, 0].mean()) < 15 and abs(ys.mean() + 40 - pts[:, 1].mean()) < 15
    path = fitted.save_npz(tmp_path / "fitted.npz")
    back = load_reconstruction(path)
    assert back.refined.dtype == bool and np.array_equal(back.refined, fitted.refined)
    assert np.array_equal(back.landmarks, fitted.landmarks)
    # an npz of an earlier version (no refined / landmarks keys) still loads: nothing refined
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k not in ("refined", "landmarks")}
    np.savez(tmp_path / "old.npz", **old)
    prev = load_reconstruction(tmp_path / "old.npz")
    assert not prev.refined.any() and prev.landmarks is None and prev.refined.shape == (prev.num_frames,)


def test_overlay_view_zooms_on_a_small_face_only():
    from avface.inference.export import overlay_view

    big = np.array([[700.0, 100.0, 1300.0, 900.0]] * 3)  # a face crop 800 px of a 1080p frame: all of it
    assert overlay_view(big, (1920, 1080)) == (0, 0, 1920, 1080)
    small = np.array([[900.0, 300.0, 1100.0, 500.0], [920.0, 310.0, 1120.0, 510.0]])  # 210 px in the clip
    x0, y0, x1, y1 = overlay_view(small, (1920, 1080))
    assert (y1 - y0) == round(1.3 * 220) and abs((x1 - x0) / (y1 - y0) - 16 / 9) < 0.01  # the frame's aspect
    assert x0 <= 900 and x1 >= 1120 and y0 <= 300 and y1 >= 510  # every frame's crop is in the view
    corner = overlay_view(np.array([[0.0, 0.0, 200.0, 200.0]]), (1920, 1080))
    assert corner[:2] == (0, 0) and corner[2] <= 1920 and corner[3] <= 1080  # kept inside the frame


def test_overlay_of_a_wide_shot_shows_the_face_large(coarse_model, tmp_path):
    """A face a sixth of a 960x540 frame: the overlay shows the part of the frame around it, enlarged to the
    overlay's height, with the detector's points where the face is."""
    from skimage.data import astronaut

    from avface.data.testing import synthetic_audio
    from avface.inference.export import write_overlay_mp4
    from avface.io.video import read_video

    img = astronaut()
    frames = np.full((12, 540, 960, 3), 90, np.uint8)
    for i in range(12):
        frames[i, 150:342, 380 + i:572 + i] = img[40:232, 110:302]
    video = write_mp4(tmp_path / "wide.mp4", frames, 25.0, synthetic_audio(0.5, seed=2))
    with Reconstructor.from_model(coarse_model, config=ReconstructConfig(progress=False)) as r:
        rec = r.run(video)
    assert rec.face_detected.all()
    mp4 = write_overlay_mp4(rec, coarse_model.face_model, video, tmp_path / "overlay.mp4", height=360)
    out = np.asarray(read_video(mp4, max_frames=1)[0][0]).astype(int)
    assert out.shape[0] == 360  # enlarged (the frame is 540 px high; a whole-frame overlay would be 360 too) ...
    left = out[40:, : out.shape[1] - 360]
    r_, g, b = left[..., 0], left[..., 1], left[..., 2]
    ys, xs = np.nonzero((g > r_ + 60) & (g > b + 60))
    assert len(ys) > 100
    # ... and zoomed: the detector's points span far more of the picture than in the whole frame scaled to 360 px
    whole_frame_span = np.ptp(rec.landmarks[0, :, 1]) * 360 / 540
    assert ys.max() - ys.min() > 1.4 * whole_frame_span, (ys.max() - ys.min(), whole_frame_span)


def test_cli_refine_flag():
    from avface.cli import build_parser

    args = build_parser().parse_args(["reconstruct", "in.mp4", "-o", "out", "--refine", "none"])
    assert args.refine == "none"
    assert build_parser().parse_args(["reconstruct", "in.mp4", "-o", "out"]).refine == "landmarks"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reconstruct", "in.mp4", "-o", "out", "--refine", "mesh"])


def test_refine_choice_is_checked(coarse_model):
    with pytest.raises(ValueError, match="refine must be one of"):
        Reconstructor.from_model(coarse_model, config=ReconstructConfig(progress=False, refine="bogus"))


def test_ndc_helpers_agree_with_the_renderers(face_model):
    """pixels_to_crop_ndc on a box at the origin is the renderer's pixels_to_ndc (one convention)."""
    uv = torch.rand(3, 68, 2) * 224
    box = np.tile(np.array([0, 0, 224, 224], np.float32), (3, 1))
    back = ndc_to_pixels(torch.as_tensor(pixels_to_crop_ndc(uv.numpy(), box)), 224)
    assert torch.allclose(back.float(), uv, atol=1e-4)

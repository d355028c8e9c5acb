"""The landmark input (the geometry channel): the detector's full point set through the detector contract, the
shards, the batch, the landmark encoder (its missing-detection path), augmentation, inference's crop and the
trained model's input contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avface.data.batch import samples_to_batch
from avface.data.clip import stored_points
from avface.data.sample import decode_sample, encode_sample
from avface.inference.tracking import FaceTrack
from avface.landmarks.crop import crop_resize
from avface.landmarks.detector import POINT_SETS, DetectedPoints, LandmarkDetector, NullDetector
from avface.landmarks.mapping import mediapipe_detection, mediapipe_to_ibug68
from avface.models.config import AVFaceConfig, LandmarkEncoderConfig
from avface.models.inputs import Batch
from avface.models.landmark_encoder import LandmarkEncoder, normalise_points
from avface.train.augment import zoom_shift
from avface.trained.checkpoints import CheckpointError, check_compatible
from avface.trained.contract import InputContract, LandmarkInputMismatch

T, S = 4, 32


def _points(rng: np.random.Generator, t: int = T, p: int = 478, size: int = S) -> np.ndarray:
    return np.concatenate([rng.uniform(0, size, (t, p, 2)), rng.normal(0, 2, (t, p, 1))], -1).astype(np.float32)


# ------------------------------------------------------------------------------------------ detector contract
class _Fixed68(LandmarkDetector):
    """A 68-point detector: every frame the same points, the second frame without a face."""

    def __call__(self, frames):
        lm = np.tile(np.arange(136, dtype=np.float32).reshape(1, 68, 2), (len(frames), 1, 1))
        ok = np.ones(len(frames), bool)
        ok[1] = False
        lm[~ok] = 0
        return lm, ok


def test_detector_contract_full_set_and_68_point_detectors():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    d = _Fixed68().detect_points(frames)
    assert d.point_set == "ibug68" and d.points.shape == (3, 68, 3) and POINT_SETS[d.point_set] == 68
    np.testing.assert_array_equal(d.points[..., :2], d.landmarks)
    assert not d.points[..., 2].any() and d.valid.tolist() == [True, False, True]
    null = NullDetector().detect_points(frames)
    assert null.point_set == "none" and null.points.shape == (3, 0, 3) and not null.valid.any()


def test_mediapipe_detection_pixels_depth_and_68_mapping(rng):
    raw = rng.uniform(0.2, 0.8, (3, 478, 3)).astype(np.float32)
    found = np.array([True, False, True])
    d = mediapipe_detection(raw, found, (40, 80))  # H 40, W 80
    assert d.point_set == "mediapipe478" and d.points.shape == (3, 478, 3)
    np.testing.assert_allclose(d.points[0], raw[0] * np.array([80, 40, 80]), rtol=1e-6)
    assert not d.points[1].any() and not d.landmarks[1].any()
    # the 68 points are exactly what the 68-point contract returned before (mapped, then scaled)
    np.testing.assert_allclose(d.landmarks[2], mediapipe_to_ibug68(raw[2, :, :2]) * np.array([80, 40]), rtol=1e-6)


# ------------------------------------------------------------------------------------------ shards and batch
def _sample(rng, points: bool, key: str = "train_a_b_c_000000", point_set: str = "mediapipe478"):
    frames = rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    extra = {}
    if points:
        pts = _points(rng, p=POINT_SETS[point_set])
        valid = np.array([True, True, False, True])
        pts[~valid] = 0
        extra = {"detector_points": pts, "detector_valid": valid, "point_set": point_set}
    return encode_sample(key, frames, np.zeros((T, 16, 80), np.float32), np.zeros((T, 68, 2), np.float32),
                         np.ones(T, bool), {"identity": "a", "start": 0}, frames_format="npy", **extra), extra


def test_shard_round_trip_of_the_full_point_set(rng):
    raw, extra = _sample(rng, points=True)
    s = decode_sample(raw)
    np.testing.assert_array_equal(s["detector_points"], extra["detector_points"])
    np.testing.assert_array_equal(s["detector_valid"], extra["detector_valid"])
    assert s["meta"]["detector_points"] == "mediapipe478"
    assert not any(k.endswith(".pkl") or k.endswith(".pickle") for k in raw)
    # an old sample (no detector points) stays readable, and its batch has no points
    old = decode_sample(_sample(rng, points=False)[0])
    assert "detector_points" not in old and samples_to_batch([old]).points is None
    # the batch scales x, y and depth with the resize to the model's side
    b = samples_to_batch([s, s], image_size=2 * S)
    assert b.points.shape == (2, T, 478, 3) and b.points_valid[0].tolist() == [True, True, False, True]
    np.testing.assert_allclose(b.points[0].numpy(), 2 * extra["detector_points"], rtol=1e-6)
    # points without their flag or set are refused on both sides
    with pytest.raises(ValueError, match="come together"):
        encode_sample("k", np.zeros((T, S, S, 3), np.uint8), np.zeros((T, 16, 80), np.float32),
                      np.zeros((T, 68, 2), np.float32), np.ones(T, bool), {}, detector_points=extra["detector_points"])
    broken = dict(raw)
    del broken["detector_valid.npy"]
    with pytest.raises(KeyError, match="detector_valid"):
        decode_sample(broken)
    with pytest.raises(ValueError, match="mix detector point sets"):
        samples_to_batch([s, decode_sample(_sample(rng, points=True, point_set="mediapipe468")[0])])


def test_stored_points_follow_the_frames_crop(rng):
    """Preprocessing's points land where crop_resize puts the same source pixels; depth scales like x."""
    pts = _points(rng, t=2, size=100)
    det = DetectedPoints(np.zeros((2, 68, 2), np.float32), np.array([True, False]), pts, "mediapipe478")
    box = [[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 100.0, 100.0]]
    out = stored_points(det, np.zeros(2, bool), box, (100, 120), 64)
    _, scale, offset = crop_resize(np.zeros((100, 120, 3), np.uint8), np.asarray(box[0]), 64)
    np.testing.assert_allclose(out["detector_points"][0, :, :2], (pts[0, :, :2] - offset) * scale, rtol=1e-5)
    np.testing.assert_allclose(out["detector_points"][0, :, 2], pts[0, :, 2] * scale, rtol=1e-5)
    assert not out["detector_points"][1].any() and out["detector_valid"].tolist() == [True, False]
    plain = stored_points(det, np.array([True, False]), None, (100, 120), 64)  # a filled frame has no detection
    np.testing.assert_allclose(plain["detector_points"][..., 0], 0.0)
    assert not plain["detector_valid"].any()


def test_track_crop_points_match_the_crop(rng):
    pts = _points(rng, t=3, size=200)
    boxes = np.array([[0, 0, 200, 200], [50, 50, 150, 150], [10, 0, 110, 100]], np.float32)
    detected = np.array([True, True, False])
    track = FaceTrack(boxes, detected, np.zeros((3, 68, 2), np.float32), points=pts, point_set="mediapipe478")
    got, ok = track.crop_points(1, 2, 64)
    np.testing.assert_allclose(got[0], np.concatenate([(pts[1, :, :2] - 50) * 0.64, pts[1, :, 2:] * 0.64], -1),
                               rtol=1e-5)
    assert ok.tolist() == [True, False] and not got[1].any()
    assert FaceTrack(boxes, detected, np.zeros((3, 68, 2), np.float32)).crop_points(0, 3, 64) is None


def test_zoom_shift_moves_points_like_landmarks(rng):
    lm = torch.from_numpy(rng.uniform(0, S, (2, T, 68, 2)).astype(np.float32))
    pts = torch.cat([lm, torch.ones(2, T, 68, 1)], -1)
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[1, 2] = False
    pts[1, 2] = 0
    batch = Batch(images=torch.rand(2, T, 3, S, S), landmarks=lm, points=pts, points_valid=valid)
    out = zoom_shift(batch, torch.tensor([1.2, 0.8]), torch.tensor([[0.1, -0.2], [0.0, 0.3]]))
    np.testing.assert_allclose(out.points[0, ..., :2].numpy(), out.landmarks[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(out.points[0, ..., 2].numpy(), 1.2, rtol=1e-6)
    assert not out.points[1, 2].any()  # an undetected frame keeps its zeros


# ------------------------------------------------------------------------------------------ the encoder
def test_landmark_encoder_shapes_and_missing_detection():
    cfg = LandmarkEncoderConfig(n_points=478, hidden=(32,), embed=8, p_drop=0.0)
    enc = LandmarkEncoder(cfg).eval()
    pts = torch.rand(2, 5, 478, 3) * S
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[0, 1] = valid[1, 4] = False
    e = enc(pts, valid, S)
    assert e.shape == (2, 5, 8)
    # missing detection: the zero embedding with flag 0; detected frames: flag 1, features not all zero
    assert not e[0, 1].any() and not e[1, 4].any()
    assert torch.all(e[valid][:, -1] == 1) and e[valid][:, :-1].abs().sum(-1).gt(0).all()
    # whatever the points of a missing frame hold, its embedding does not depend on them
    pts2 = pts.clone()
    pts2[0, 1] = 123.0
    assert torch.equal(enc(pts2, valid, S), e)
    # no points at all: the zero embedding of every frame
    assert not enc(None, None, S, shape=(2, 5)).any()
    with pytest.raises(ValueError, match="478 points"):
        enc(pts[:, :, :468], valid, S)
    np.testing.assert_allclose(normalise_points(torch.tensor([[0.0, S, 4.0]]), S).numpy(), [[-1.0, 1.0, 0.25]])


def test_landmark_dropout_only_in_training():
    enc = LandmarkEncoder(LandmarkEncoderConfig(n_points=68, hidden=(16,), embed=4, p_drop=0.5))
    pts, valid = torch.rand(4, 64, 68, 3) * S, torch.ones(4, 64, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    flags = enc.train()(pts, valid, S, generator=g)[..., -1].detach()
    assert 0.3 < float(flags.mean()) < 0.7  # dropped frames: flag 0 and zero features
    assert not enc(pts, valid, S, generator=torch.Generator().manual_seed(0))[flags == 0].any()
    assert torch.all(enc.eval()(pts, valid, S)[..., -1] == 1)


def test_model_switch_keeps_the_image_only_model():
    from avface.face_model import FaceModel, load_face_model
    from avface.models.avface import AVFace

    fm = FaceModel(load_face_model(None))
    cfg = AVFaceConfig.tiny()
    cfg.audio_dim, cfg.stages = 80, ("coarse",)
    plain = AVFace(cfg, fm, renderer=False)
    assert not any(".landmarks." in k or "landmark_proj" in k for k in plain.trainable_state_dict())
    lm_cfg = dataclasses.replace(cfg, landmark_input=True)
    model = AVFace(lm_cfg, fm, renderer=False).eval()
    assert any(k.startswith("coarse.landmarks.") for k in model.trainable_state_dict())
    assert any(k.startswith("expression.landmarks.") for k in model.trainable_state_dict())
    batch = Batch(images=torch.rand(1, T, 3, 64, 64), landmarks=torch.zeros(1, T, 68, 2),
                  audio=torch.randn(1, T, 16, 80), points=torch.rand(1, T, 478, 3) * 64)
    out = model(batch, render=False)
    assert out.shape.shape == (1, T, 100) and out.expression.shape == (1, T, 50)
    with pytest.raises(ValueError, match="no detector points"):
        model(dataclasses.replace(batch, points=None, points_valid=None), render=False)


# ------------------------------------------------------------------------------------------ the input contract
def test_contract_records_and_checks_the_landmark_input():
    contract = InputContract(landmark_points="mediapipe478")
    assert InputContract.from_dict(contract.to_dict()) == contract
    contract.check_landmark_points("mediapipe478")
    InputContract().check_landmark_points("ibug68")  # an image-only model takes any detector
    with pytest.raises(LandmarkInputMismatch, match="mediapipe478.*'ibug68'"):
        contract.check_landmark_points("ibug68", "model.pt")
    with pytest.raises(LandmarkInputMismatch, match="no detector points"):
        contract.check_landmark_points(None)
    ckpt = {"path": "final.pt", "input_contract": contract.to_dict(), "model_config": {}, "audio_kind": "mel"}
    check_compatible(ckpt, landmark_points="mediapipe478")
    with pytest.raises(CheckpointError, match="final.pt.*mediapipe478"):
        check_compatible(ckpt, landmark_points="mediapipe468")


def test_dense_landmark_term_of_the_starter_model():
    """The 468 MediaPipe points are the starter model's vertices 0..467: points placed where the predicted mesh
    projects give 0; moved points a positive term; undetected frames do not count; off by default."""
    from avface.face_model import FaceModel, load_face_model
    from avface.models.avface import AVFace
    from avface.render.cameras import ndc_to_pixels, orthographic_project
    from avface.train.objectives import coarse_objective, dense_landmark_term

    fm = FaceModel(load_face_model(None))
    cfg = dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80, stages=("coarse",), landmark_input=True)
    model = AVFace(cfg, fm, renderer=False).eval()
    batch = Batch(images=torch.rand(1, T, 3, 64, 64), landmarks=torch.zeros(1, T, 68, 2),
                  audio=torch.randn(1, T, 16, 80), points=torch.zeros(1, T, 478, 3))
    with torch.no_grad():
        out = model(batch, render=False)
        proj = orthographic_project(out.vertices[0, :, :468], out.cam[0])[..., :2]
    pts = torch.zeros(1, T, 478, 3)
    pts[0, :, :468, :2] = ndc_to_pixels(proj, (64, 64))
    exact = dataclasses.replace(batch, points=pts)
    assert float(dense_landmark_term(model, exact, out)) < 1e-5
    moved = pts.clone()
    moved[0, 0, :468, 0] += 3.2  # 3.2 px at 64 px = 0.1 NDC on the first frame
    valid = torch.ones(1, T, dtype=torch.bool)
    got = float(dense_landmark_term(model, dataclasses.replace(batch, points=moved, points_valid=valid), out))
    np.testing.assert_allclose(got, 0.1 / 2 / T, rtol=1e-3)  # mean per coordinate over the valid frames
    valid[0, 0] = False
    assert float(dense_landmark_term(model, dataclasses.replace(batch, points=moved, points_valid=valid), out)) < 1e-5
    assert "dense_landmarks" not in coarse_objective(model, exact, out)  # the paper's losses: weight 0
    model.config.losses.dense_landmarks = 2.0
    assert "dense_landmarks" in coarse_objective(model, exact, out)


def test_training_takes_the_point_set_from_the_shards_or_refuses():
    from pathlib import Path

    from avface.train.config import TrainConfig
    from avface.train.trainer import _landmark_input_from_data

    cfg = TrainConfig()
    cfg.model.landmark_input = True
    _landmark_input_from_data(cfg, {"detector_points": "mediapipe468"}, Path("shards"))
    assert (cfg.model.landmarks.point_set, cfg.model.landmarks.n_points) == ("mediapipe468", 468)
    with pytest.raises(ValueError, match="shards store no detector points"):
        _landmark_input_from_data(cfg, {"detector_points": None}, Path("shards"))

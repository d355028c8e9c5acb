"""Shard samples -> model batches (avface.data.batch)."""

import numpy as np
import pytest
import torch

from avface.data.batch import samples_to_batch
from avface.data.sample import decode_sample, encode_sample


def _sample(identity: str, start: int, *, size: int = 32, t: int = 16, normals: bool = True, mask: bool = True,
            seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
    lm = rng.uniform(0, size, (t, 68, 2)).astype(np.float32)
    n = rng.normal(size=(t, size, size, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    occ = np.zeros((t, size, size), np.float32)
    occ[:, : size // 2] = 1.0
    raw = encode_sample(f"train_{identity}_yt_00001_{start:06d}", frames, rng.normal(size=(t, 16, 80)), lm,
                        np.ones(t, bool), {"identity": identity}, normals=n if normals else None,
                        occlusion_mask=occ if mask else None, frames_format="npy")
    return decode_sample(raw)


def test_batch_keys_shapes_and_scaling():
    samples = [_sample("id1", 0, seed=1), _sample("id2", 16, seed=2), _sample("id1", 32, seed=3)]
    batch = samples_to_batch(samples, image_size=64)
    assert batch.images.shape == (3, 16, 3, 64, 64) and batch.images.dtype == torch.float32
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    assert batch.audio.shape == (3, 16, 16, 80)
    # Landmarks follow the resize (32 -> 64 px: twice the pixel coordinates).
    np.testing.assert_allclose(batch.landmarks[1].numpy(), samples[1]["landmarks"] * 2, rtol=1e-6)
    assert batch.landmarks_valid.dtype == torch.bool and batch.landmarks_valid.all()
    assert batch.normals.shape == (3, 16, 3, 64, 64)
    np.testing.assert_allclose(batch.normals.norm(dim=2).numpy(), 1.0, atol=1e-4)
    occ = batch.occlusion_mask
    assert occ.shape == (3, 16, 64, 64) and occ[:, :, :28].min() > 0.99 and occ[:, :, 36:].max() < 0.01
    assert batch.identity.tolist() == [0, 1, 0]  # windows of one speaker share a label


def test_same_size_keeps_pixels_and_optional_keys_need_every_sample():
    a, b = _sample("id1", 0, seed=4), _sample("id2", 0, seed=5, normals=False, mask=False)
    batch = samples_to_batch([a, b])
    np.testing.assert_allclose(batch.images[0].permute(0, 2, 3, 1).numpy() * 255, a["frames"], atol=1e-3)
    assert batch.normals is None and batch.occlusion_mask is None  # never a fake zero target
    with pytest.raises(ValueError, match="at least one"):
        samples_to_batch([])
    with pytest.raises(ValueError, match="differ"):
        samples_to_batch([a, _sample("id3", 0, size=48)])


def _gt(t: int, seed: int, light: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = {"shape": rng.normal(size=(t, 100)), "expression": rng.normal(size=(t, 50)), "jaw": rng.normal(size=(t, 3)),
          "global_pose": rng.normal(size=(t, 3)), "neck_pose": rng.normal(size=(t, 3)),
          "eye_pose": rng.normal(size=(t, 6)), "cam": rng.normal(size=(t, 3)), "albedo": rng.normal(size=(50,))}
    if light:
        gt["light"] = rng.normal(size=(9, 3))
    return gt


def test_validity_rules_targets_keys_and_device_move():
    a, b = _sample("id1", 0, seed=6), _sample("id2", 16, seed=7)
    a["audio_features"][3:5] = 0.0  # missing audio is stored as zeros
    b["meta"]["occluded"] = True
    b["landmarks_valid"][7] = False
    batch = samples_to_batch([a, b])
    assert batch.batch_size == 2 and batch.window == 16 and batch.image_size == 32
    expected_audio = torch.ones(2, 16, dtype=torch.bool)
    expected_audio[0, 3:5] = False
    assert torch.equal(batch.audio_valid, expected_audio)
    assert torch.equal(batch.video_valid, batch.landmarks_valid) and not batch.video_valid[1, 7]
    assert batch.occluded.tolist() == [False, True]
    assert batch.keys == [a["key"], b["key"]]
    assert batch.targets is None  # no ground-truth parameters in these samples
    b["meta"]["has_audio"] = False  # the clip had no audio stream: no frame's audio is valid
    assert not samples_to_batch([a, b]).audio_valid[1].any()

    a["gt"], b["gt"] = _gt(16, 1), _gt(16, 2, light=False)
    batch = samples_to_batch([a, b])
    tg = batch.targets
    assert tg.shape.shape == (2, 16, 100) and tg.eye_pose.shape == (2, 16, 6) and tg.cam.dtype == torch.float32
    assert tg.albedo.shape == (2, 50) and tg.light is None  # light absent from one sample: absent
    np.testing.assert_allclose(tg.jaw[1].numpy(), b["gt"]["jaw"], rtol=1e-6)
    assert set(tg.as_dict()) == {"shape", "expression", "jaw", "global_pose", "neck_pose", "eye_pose", "cam",
                                 "albedo"}
    del b["gt"]["jaw"]
    with pytest.raises(ValueError, match="jaw"):
        samples_to_batch([a, b])
    moved = batch.to("meta")
    assert moved.images.device.type == "meta" and moved.targets.shape.device.type == "meta"
    assert moved.keys == batch.keys and batch.images.device.type == "cpu"


def test_hand_built_batch_defaults_and_shape_errors():
    from avface.data.batch import Batch

    b = Batch(images=torch.rand(2, 4, 3, 8, 8), landmarks=torch.zeros(2, 4, 68, 2))
    assert b.landmarks_valid.all() and b.video_valid.all() and not b.audio_valid.any()  # no audio: not valid
    assert b.identity.tolist() == [0, 1]
    with pytest.raises(ValueError, match="landmarks"):
        Batch(images=torch.rand(2, 4, 3, 8, 8), landmarks=torch.zeros(2, 3, 68, 2))

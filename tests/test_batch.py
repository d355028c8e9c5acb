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
    assert batch["images"].shape == (3, 16, 3, 64, 64) and batch["images"].dtype == torch.float32
    assert 0 <= batch["images"].min() and batch["images"].max() <= 1
    assert batch["audio"].shape == (3, 16, 16, 80)
    # Landmarks follow the resize (32 -> 64 px: twice the pixel coordinates).
    np.testing.assert_allclose(batch["landmarks"][1].numpy(), samples[1]["landmarks"] * 2, rtol=1e-6)
    assert batch["landmarks_valid"].dtype == torch.bool and batch["landmarks_valid"].all()
    assert batch["normals"].shape == (3, 16, 3, 64, 64)
    np.testing.assert_allclose(batch["normals"].norm(dim=2).numpy(), 1.0, atol=1e-4)
    occ = batch["occlusion_mask"]
    assert occ.shape == (3, 16, 64, 64) and occ[:, :, :28].min() > 0.99 and occ[:, :, 36:].max() < 0.01
    assert batch["identity"].tolist() == [0, 1, 0]  # windows of one speaker share a label


def test_same_size_keeps_pixels_and_optional_keys_need_every_sample():
    a, b = _sample("id1", 0, seed=4), _sample("id2", 0, seed=5, normals=False, mask=False)
    batch = samples_to_batch([a, b])
    np.testing.assert_allclose(batch["images"][0].permute(0, 2, 3, 1).numpy() * 255, a["frames"], atol=1e-3)
    assert "normals" not in batch and "occlusion_mask" not in batch  # never a fake zero target
    with pytest.raises(ValueError, match="at least one"):
        samples_to_batch([])
    with pytest.raises(ValueError, match="differ"):
        samples_to_batch([a, _sample("id3", 0, size=48)])

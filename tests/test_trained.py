"""The trained model's contract (avface.trained): every checkpoint says how its inputs were made; training writes
it from the shards, inference reads it (frame rate, crop scale), an old checkpoint without one loads with the
legacy values and a warning, a user's override of a trained value warns."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from avface.face_model import FaceModel, load_face_model
from avface.inference import ReconstructConfig, Reconstructor
from avface.models import AVFaceConfig
from avface.models.avface import AVFace
from avface.trained.checkpoints import input_contract_of, load_trained, read_checkpoint, save_checkpoint
from avface.trained.contract import (
    FACE_CROP_FRAMING,
    LEGACY,
    InputContract,
    contract_from_summary,
    face_model_fingerprint,
)

T = 30  # frames of the test clip (1.2 s at 25 fps)


@pytest.fixture(scope="module")
def face_model() -> FaceModel:
    return FaceModel(load_face_model(None))


@pytest.fixture(scope="module")
def model(face_model) -> AVFace:
    torch.manual_seed(0)
    return AVFace(dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80), face_model).eval()


def _summary(**kw) -> dict:
    """A ``data_summary`` of 64 px shards at 25 fps, 16-frame windows, mel features (what contracts are made of)."""
    return {"fps": 25.0, "window": 16, "audio_window": 16, "image_sizes": [64], "crop": "none", "crop_scale": None,
            "audio_kind": "mel", "audio_dim": 80, **kw}


def test_contract_round_trip_and_how_it_is_made_from_the_shards(face_model, caplog):
    c = contract_from_summary(_summary(crop="landmarks", crop_scale=1.8), face_model=face_model,
                              audio_mean=[0.5] * 80, audio_std=np.full(80, 2.0).tolist())
    assert (c.fps, c.window, c.image_size, c.crop, c.crop_scale) == (25.0, 16, 64, "landmarks", 1.8)
    assert c.audio_mean == (0.5,) * 80 and c.face_model_fingerprint == face_model_fingerprint(face_model)
    assert InputContract.from_dict(c.to_dict()) == c
    # whole frames of face-crop videos: the framing that reproduces them; old landmark shards: legacy, with a warning
    assert contract_from_summary(_summary(), face_model=face_model).crop_scale == FACE_CROP_FRAMING
    with caplog.at_level(logging.WARNING):
        old = contract_from_summary(_summary(crop="landmarks"), face_model=face_model)
    assert old.crop_scale == LEGACY.crop_scale and "do not record video.crop_scale" in caplog.text
    with pytest.raises(ValueError, match="mix frame sizes"):
        contract_from_summary(_summary(image_sizes=[64, 128]), face_model=face_model)
    # an override: its value, with a warning only when it differs from the trained one
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert c.resolve("crop_scale", None) == 1.8 and c.resolve("crop_scale", 1.8) == 1.8
        assert not caplog.text
        assert c.resolve("crop_scale", 2.2, "clip.mp4") == 2.2
    assert "clip.mp4: crop_scale 2.2 differs from the 1.8 the model was trained with" in caplog.text


def test_a_checkpoint_carries_its_contract_and_an_old_one_loads_with_the_legacy_values(model, face_model, tmp_path,
                                                                                        caplog):
    contract = contract_from_summary(_summary(crop="landmarks", crop_scale=1.8, fps=30.0), face_model=face_model)
    path = save_checkpoint(tmp_path / "new.pt", model=model, stage="coarse", step=1, epoch=0, audio_kind="mel",
                           face_model_source=None, input_contract=contract.to_dict())
    with caplog.at_level(logging.WARNING):
        trained = load_trained(path)
    assert trained.contract == contract and "input_contract" not in caplog.text
    # an old checkpoint: the same file without the key (what every checkpoint before the contract looks like)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["input_contract"]
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        legacy = load_trained(old).contract
    assert f"{old}: the checkpoint does not record how its inputs were made" in caplog.text
    assert (legacy.fps, legacy.crop_scale, legacy.window) == (25.0, 2.2, 16)
    assert (legacy.audio_kind, legacy.audio_dim) == ("mel", 80)
    assert legacy.face_model_fingerprint == face_model_fingerprint(face_model) == read_checkpoint(old)[
        "face_model"]["fingerprint"]
    assert input_contract_of(read_checkpoint(path)) == contract


def face_clip(path, t: int = T, size: int = 192):
    """A real face moving slowly (windows of the astronaut image) as an mp4 with speech-like audio."""
    from avface.data.testing import synthetic_audio
    from avface.io.media import write_mp4

    img = astronaut()
    x = np.round(110 + 20 * np.sin(np.arange(t) / 6.0)).astype(int)
    frames = np.stack([img[40:40 + size, xi:xi + size] for xi in x])
    return write_mp4(path, frames, 25.0, synthetic_audio(t / 25, seed=1))


def test_an_in_memory_model_reconstructs_at_its_contract(model, tmp_path, caplog):
    """fps and crop scale come from the contract given with the model; the config's values override them, warned."""
    clip = face_clip(tmp_path / "talk.mp4")
    contract = dataclasses.replace(LEGACY, crop="landmarks", crop_scale=1.7, fps=20.0)
    with Reconstructor.from_model(model, config=ReconstructConfig(progress=False), contract=contract) as r:
        rec = r.run(clip)
    assert rec.fps == 20.0 and rec.meta["model_frames"] == 24 and rec.meta["crop_scale"] == 1.7
    assert rec.num_frames == T  # interpolated back to the input's frames
    with caplog.at_level(logging.WARNING):
        r = Reconstructor.from_model(model, config=ReconstructConfig(progress=False, fps=25.0), contract=contract)
    assert r.fps == 25.0 and r.crop_scale == 1.7 and "fps 25 differs from the 20" in caplog.text


def _box_side(rec) -> float:
    """Median side (px) of the crop boxes: crop scale x the face's landmark extent."""
    side = rec.crop_box[:, 2] - rec.crop_box[:, 0]
    return float(np.median(side))


@pytest.mark.slow
@pytest.mark.ray
def test_a_model_trained_on_shards_cropped_at_another_scale_reconstructs_at_that_scale(tmp_path, caplog):
    """Shards cropped around the landmarks at 1.8 (not the legacy 2.2) -> a few training steps -> the checkpoint's
    contract says 1.8 -> ``avface reconstruct`` crops at 1.8; ``--crop-scale 2.2`` overrides it with a warning."""
    from avface.cli import main
    from avface.inference import load_reconstruction
    from avface.train.testing import make_training_shards
    from avface.train.trainer import run_training

    shards = make_training_shards(tmp_path / "data", dev_identities=2, test_identities=1, clips_per_identity=1,
                                  occluded_windows=2, num_cpus=2,
                                  video={"crop": "landmarks", "crop_scale": 1.8})["shards"]
    res = run_training({"data": {"shards": str(shards), "val_windows": 4, "val_occluded_windows": 0},
                        "out": str(tmp_path / "runs"), "stage": "pretrain", "num_cpus": 2, "progress": False,
                        "tracking": {"registered_model": ""},
                        "stages": {"pretrain": {"steps": 2, "val_every": 2, "report_every": 1}}})
    contract = load_trained(res["final"]).contract
    assert (contract.crop, contract.crop_scale, contract.fps, contract.window) == ("landmarks", 1.8, 25.0, 16)
    assert contract.image_size == 64 and contract.audio_kind == "mel" and contract.audio_mean is not None

    clip = face_clip(tmp_path / "talk.mp4")
    common = ["reconstruct", str(clip), "--checkpoint", res["final"], "--device", "cpu", "--quiet"]
    with caplog.at_level(logging.WARNING):
        assert main([*common, "-o", str(tmp_path / "trained")]) == 0
    assert "crop_scale" not in caplog.text
    trained = load_reconstruction(tmp_path / "trained" / "talk.npz")
    assert trained.meta["crop_scale"] == 1.8 and trained.fps == 25.0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*common, "-o", str(tmp_path / "override"), "--crop-scale", "2.2"]) == 0
    assert "crop_scale 2.2 differs from the 1.8 the model was trained with" in caplog.text
    override = load_reconstruction(tmp_path / "override" / "talk.npz")
    assert override.meta["crop_scale"] == 2.2
    # the boxes themselves: side = crop scale x the same landmark extent
    assert _box_side(override) / _box_side(trained) == pytest.approx(2.2 / 1.8, rel=1e-3)
    assert 80 < _box_side(trained) / 1.8 < 105  # the astronaut's face spans ~92 px

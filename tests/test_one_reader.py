"""Preprocessing and `avface reconstruct` read a video the same way (avface.io.video): for the same clip they feed
the model identical frames and audio features, also for a clip with rotation metadata and one whose audio starts
late. Real files: H.264 + AAC written with PyAV, rotation and the audio delay added by the ffmpeg command line; the
upright frames are checked against ffmpeg's own autorotation."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest
import torch

from avface.audio import AudioConfig
from avface.data.clip import ClipResources, decode_audio, open_video, process_clip
from avface.data.config import PreprocessConfig
from avface.data.sample import decode_sample
from avface.data.testing import synthetic_frames
from avface.face_model import FaceModel, load_face_model
from avface.inference import ReconstructConfig, Reconstructor
from avface.io.media import write_mp4, write_wav
from avface.io.video import read_audio, read_video, resize_frames, scan_video
from avface.models import AVFaceConfig
from avface.models.avface import AVFace

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line")

T, SR = 40, 16000  # 1.6 s at 25 fps: 2 windows of 16
DELAY = 0.3  # s: the late clip's audio starts here on the video's clock


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *args], check=True)


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * 330 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32) / 1.5


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("one_reader")
    frames = synthetic_frames(T, 96, seed=5)[:, :, :80].copy()  # 96 high, 80 wide
    frames[:, :12, :12] = 255  # a corner marker: orientation shows
    write_mp4(d / "plain.mp4", frames, 25.0, _tone(T / 25))
    # stored sideways, with a rotation tag (ffmpeg writes it as the display matrix)
    write_mp4(d / "side.mp4", np.ascontiguousarray(np.rot90(frames, -1, axes=(1, 2))), 25.0, _tone(T / 25))
    _ffmpeg("-i", str(d / "side.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=270", str(d / "rotated.mp4"))
    # the audio delayed by DELAY s against the video (its stream starts late in the container)
    write_mp4(d / "video_only.mp4", frames, 25.0)
    write_wav(d / "tone.wav", _tone(T / 25))
    _ffmpeg("-i", str(d / "video_only.mp4"), "-itsoffset", str(DELAY), "-i", str(d / "tone.wav"), "-map", "0:v",
            "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-ar", str(SR), str(d / "late.mp4"))
    return d, frames


def _cfg() -> PreprocessConfig:
    cfg = PreprocessConfig()
    cfg.video.image_size = 64  # the tiny model's
    cfg.video.frames_format = "npy"  # lossless: the stored frames are the model's frames
    cfg.landmarks.detector = "none"
    cfg.normals.source = "none"
    cfg.audio = AudioConfig(kind="mel")
    return cfg


def _row(path) -> dict:
    return {"clip_id": f"dev/id00001/yt/{path.stem}", "video_path": str(path), "audio_path": None, "gt_path": None,
            "identity": "id00001", "ytid": "yt", "utterance": path.stem, "fps": 25.0, "num_frames": T,
            "duration": T / 25, "width": 96, "height": 96, "has_audio": True}


def _preprocess(path) -> tuple[np.ndarray, np.ndarray]:
    """Model frames (N, S, S, 3) u8 and audio features (N, 16, F) of the clip's windows, as stored in its shards."""
    cfg = _cfg()
    res = ClipResources.create(cfg)
    samples = [decode_sample(s) for s in process_clip(_row(path), cfg, "train", frozenset(), res)]
    res.close()
    return np.concatenate([s["frames"] for s in samples]), np.concatenate([s["audio_features"] for s in samples])


@pytest.fixture(scope="module")
def recon():
    torch.manual_seed(0)
    cfg = dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80, stages=("coarse",))
    model = AVFace(cfg, FaceModel(load_face_model(None)), renderer=False)
    model.set_stage("coarse")
    # crop=none: whole frames resized, as preprocessing's crop=none (no landmark crop on either side)
    rc = ReconstructConfig(crop="none", progress=False)
    with Reconstructor.from_model(model.eval(), audio=_cfg().audio, config=rc) as r:
        yield r


@pytest.mark.parametrize("name", ["plain.mp4", "rotated.mp4", "late.mp4"])
def test_preprocessing_and_inference_feed_the_model_the_same(clips, recon, name):
    d, _ = clips
    frames_p, feats_p = _preprocess(d / name)
    frames_i, feats_i = recon.model_inputs(d / name)
    assert len(frames_p) == 2 * 16 and len(frames_i) == T  # windows cover the first 32 of the 40 model frames
    assert np.array_equal(frames_p, frames_i[:32])
    assert np.array_equal(feats_p, feats_i[:32])


def test_rotated_clip_is_upright_as_ffmpeg_shows_it(clips):
    d, frames = clips
    scan = scan_video(d / "rotated.mp4")
    assert scan.info.rotation == 270 and (scan.info.width, scan.info.height) == (80, 96)
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(d / "rotated.mp4"), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    ffmpeg = np.frombuffer(raw, np.uint8).reshape(T, 96, 80, 3)  # ffmpeg turns it upright by default
    upright, _ = read_video(d / "rotated.mp4")
    assert np.array_equal(upright, ffmpeg)
    stored, _ = _preprocess(d / "rotated.mp4")  # preprocessing's frames: ffmpeg's upright frames, resized
    assert np.array_equal(stored, resize_frames(ffmpeg[:32], 64, 64))


def test_late_audio_is_silent_until_it_starts(clips):
    d, _ = clips
    row, cfg = _row(d / "late.mp4"), _cfg()
    video = open_video(row, cfg)
    assert video.info.audio_offset == pytest.approx(DELAY, abs=0.07)  # (less the AAC encoder's priming)
    audio = decode_audio(row, cfg, video, len(video.indices))
    assert audio.shape == (T * SR // 25,)
    onset = np.argmax(np.abs(audio) > 0.1) / SR
    assert onset == pytest.approx(DELAY, abs=0.01)  # on the video's clock
    raw_onset = np.argmax(np.abs(read_audio(d / "late.mp4")) > 0.1) / SR
    assert raw_onset < DELAY - 0.2  # the stream itself starts with the sound: ignoring its start is 0.3 s early

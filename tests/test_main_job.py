"""The main job (`make demo`): face model + turntable mp4 + contact sheet, on the embedded default."""

from __future__ import annotations

from pathlib import Path

import decord
import numpy as np

from avface.demo.config import CorpusStage, MainConfig
from avface.demo.job import run_main_job as run
from avface.face_model import load_face_model
from avface.face_model.testing import random_face_model_data
from avface.viz.turntable import TurntableConfig, render_turntable


def test_turntable_shows_a_turning_talking_face():
    frames = render_turntable(load_face_model(None), TurntableConfig(num_frames=8, image_size=96))
    assert frames.shape == (8, 96, 96, 3) and frames.dtype == np.uint8
    # Background is a dark grey gradient; the face is bright skin. It covers a plausible share of the frame ...
    skin = (frames[..., 0].astype(int) > 120) & (frames[..., 0] >= frames[..., 2])
    coverage = skin.mean(axis=(1, 2))
    assert np.all(coverage > 0.15) and np.all(coverage < 0.8), coverage
    # ... stays centred while it turns ...
    ys, xs = np.nonzero(skin[0])
    assert abs(xs.mean() - 48) < 10 and abs(ys.mean() - 48) < 12
    # ... is exposed, not clipped (the shading shows the shape) ...
    assert (frames[..., 0][skin] >= 254).mean() < 0.05
    # ... and the frames differ (the head turns and the jaw moves).
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 5


def test_turntable_of_a_model_with_fewer_components_than_avface_uses():
    """Any valid FaceModelData renders (a saved .npz may have fewer than 100 shape / 50 expression components)."""
    data = random_face_model_data(seed=0)
    assert data.n_shape < 100 and data.n_expression < 50
    frames = render_turntable(data, TurntableConfig(num_frames=3, image_size=32))
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8


def test_main_job_writes_model_video_and_contact_sheet(tmp_path: Path):
    out = tmp_path / "demo"
    paths = run(MainConfig(out=str(out), turntable=TurntableConfig(num_frames=6, image_size=64),
                           corpus=CorpusStage(enabled=False)))
    reloaded = type(load_face_model(None)).load_npz(paths["face_model"])
    assert reloaded.v_template.shape == load_face_model(None).v_template.shape
    video = decord.VideoReader(str(paths["turntable"]))
    assert len(video) == 6 and video[0].shape == (64, 64, 3)
    assert abs(video.get_avg_fps() - 25) < 1e-3
    assert paths["contact_sheet"].stat().st_size > 1000

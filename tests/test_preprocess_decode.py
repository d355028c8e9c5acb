"""process_clip on a real truncated mp4: the container (its moov is at the front) lists every frame, the reader
decodes all but the last ones. Filled frames are marked; too many missing -> failure."""

import json

import av
import numpy as np
import pytest

from avface.data.clip import MAX_FILLED_FRAMES, ClipResources, process_clip
from avface.data.config import PreprocessConfig
from avface.data.sample import decode_sample
from avface.data.testing import synthetic_audio, synthetic_frames, synthetic_landmarks
from avface.io.media import write_wav
from avface.io.video import iter_frames, scan_video
from avface.utils.failures import ClipFailure

T, SIZE = 48, 64  # 3 windows of 16 at 25 fps


def _truncated_mp4(path, options):
    """Faststart (moov first) H.264 mp4 with its last byte cut off: the last packet is damaged."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "20", "g": "8", "threads": "1", **options}
        for i, f in enumerate(synthetic_frames(T, SIZE, seed=1)):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    path.write_bytes(path.read_bytes()[:-1])
    return path


def _row(tmp_path, video):
    gt = tmp_path / "gt.npz"
    np.savez(gt, landmarks2d=synthetic_landmarks(T, SIZE))
    audio = write_wav(tmp_path / "a.wav", synthetic_audio(T / 25, seed=1))
    return {"clip_id": "dev/id00001/trunc/00001", "video_path": str(video), "audio_path": str(audio),
            "gt_path": str(gt), "identity": "id00001", "ytid": "trunc", "utterance": "00001", "fps": 25.0,
            "num_frames": T, "duration": T / 25, "width": SIZE, "height": SIZE, "has_audio": True}


def _cfg():
    cfg = PreprocessConfig()
    cfg.video.image_size = SIZE
    cfg.landmarks.detector = "none"
    cfg.normals.source = "none"
    return cfg


def _decoded(video) -> int:
    scan = scan_video(video)
    assert scan.info.num_frames == T  # the container lists them all
    n = sum(1 for _ in iter_frames(scan.info))
    assert n == len(scan.times)  # both passes of the reader decode the same frames
    return n


def test_few_missing_frames_are_filled_and_marked(tmp_path):
    video = _truncated_mp4(tmp_path / "v.mp4", {"bf": "0"})  # no B-frames: only the last frame is lost
    assert _decoded(video) == T - 1
    cfg = _cfg()
    res = ClipResources.create(cfg)
    samples = [decode_sample(s) for s in process_clip(_row(tmp_path, video), cfg, "train", frozenset(), res)]
    res.close()
    assert [d["meta"]["start"] for d in samples] == [0, 16, 32]
    last = samples[-1]
    assert last["meta"]["decoder"] == "pyav" and last["meta"]["frames_filled"] == [15]
    assert last["landmarks_valid"].tolist() == [True] * 15 + [False]
    assert np.all(last["landmarks"][15] == 0)
    for d in samples[:2]:  # complete windows: nothing filled, ground-truth landmarks valid
        assert "frames_filled" not in d["meta"] and d["landmarks_valid"].all()
    assert json.dumps(last["meta"])


def test_too_many_missing_frames_fail_the_clip(tmp_path):
    video = _truncated_mp4(tmp_path / "v.mp4", {})  # B-frames: the damaged tail loses several frames
    n = _decoded(video)
    assert n < T - MAX_FILLED_FRAMES
    cfg = _cfg()
    res = ClipResources.create(cfg)
    with pytest.raises(ClipFailure) as e:
        process_clip(_row(tmp_path, video), cfg, "train", frozenset(), res)
    res.close()
    assert e.value.stage == "decode_video"
    assert f"PyAV decoded {n} frames" in e.value.message and "missing" in e.value.message

"""avface.io.media: real mp4/wav round trips, checked with independent decoders (decord, torchaudio)."""

from __future__ import annotations

import decord
import numpy as np
import pytest
import torchaudio

from avface.io import MediaError, probe, read_audio, read_video, read_wav, write_mp4, write_wav

FPS, SR = 25, 16000


def _clip(t: int = 50, h: int = 64, w: int = 96):
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, :, :, 0] = 4 * i  # brightness ramp: frame order is recoverable
        frames[i, 10:30, i : i + 20, 1] = 255
    n = t * SR // FPS
    tt = np.arange(n) / SR
    audio = (0.4 * np.sin(2 * np.pi * 440 * tt) * (tt > 0.5)).astype(np.float32)  # silence, then a tone at 0.5 s
    return frames, audio


def test_mp4_roundtrip_pyav(tmp_path):
    frames, audio = _clip()
    path = write_mp4(tmp_path / "a" / "00001.mp4", frames, FPS, audio, SR, threads=1)
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    info = probe(path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["sample_rate"] == SR and info["audio_channels"] == 1
    assert (info["width"], info["height"]) == (96, 64)
    video, fps = read_video(path)
    assert video.shape == frames.shape and fps == pytest.approx(FPS)
    # lossy, but close, and in order
    assert np.abs(video.astype(int) - frames).mean() < 3
    # frame order and timing: the green bar of frame i starts at column i (centre i + 9.5)
    g = video[:, 10:30, :, 1].astype(np.float64).mean(axis=1)
    centre = (g * np.arange(g.shape[1])).sum(axis=1) / g.sum(axis=1)
    assert np.abs(centre - (np.arange(len(frames)) + 9.5)).max() < 0.5
    decoded = read_audio(path, SR)
    # AAC pads the last frame: at most 1024 samples longer, never shorter
    assert len(audio) <= len(decoded) < len(audio) + 1024
    onset = np.argmax(np.abs(decoded) > 0.1) / SR
    assert onset == pytest.approx(0.5, abs=0.01)  # audio starts at time 0: no priming delay


def test_mp4_independent_decoders(tmp_path):
    frames, audio = _clip()
    path = write_mp4(tmp_path / "b.mp4", frames, FPS, audio, SR, threads=1)
    vr = decord.VideoReader(str(path))
    assert len(vr) == len(frames) and vr.get_avg_fps() == pytest.approx(FPS)
    assert vr[0].shape == frames.shape[1:]
    wav, sr = torchaudio.load(str(path))
    assert sr == SR and wav.shape[0] == 1
    assert abs(wav.shape[1] / sr - len(frames) / FPS) < 1024 / SR


def test_mp4_without_audio_and_resample(tmp_path):
    frames, audio = _clip(t=10)
    path = write_mp4(tmp_path / "c.mp4", frames, 30, None)
    assert probe(path)["audio_codec"] is None
    with pytest.raises(MediaError, match="c.mp4"):
        read_audio(path)
    path = write_mp4(tmp_path / "d.mp4", frames, FPS, audio, SR)
    a8 = read_audio(path, 8000, num_samples=len(audio) // 2)
    assert a8.shape == (len(audio) // 2,)


def test_bad_inputs_name_the_file(tmp_path):
    frames, _ = _clip(t=4, h=63)
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", frames, FPS)
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "f.mp4", frames.astype(np.float32), FPS)
    with pytest.raises(MediaError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match="garbage.mp4"):
        read_video(bad)
    assert not (tmp_path / "odd.mp4").exists()


def test_wav_roundtrip(tmp_path):
    _, audio = _clip()
    path = write_wav(tmp_path / "SEN_x.wav", audio, SR)
    back, sr = read_wav(path)
    assert sr == SR and back.shape == audio.shape
    assert np.abs(back - audio).max() < 1e-3
    back8, sr8 = read_wav(path, 8000)
    assert sr8 == 8000 and abs(len(back8) - len(audio) // 2) <= 1
    assert np.allclose(read_audio(path, SR), back, atol=1e-4)  # PyAV reads the same wav


def test_png_io_survives_decord_import():
    """decord bundles an old zlib; importing it after avface must leave OpenCV's PNG codec working."""
    import subprocess
    import sys

    code = (
        "import avface, decord, cv2, numpy as np\n"
        "ok, buf = cv2.imencode('.png', np.full((8, 8, 3), 7, np.uint8))\n"
        "assert ok and cv2.imdecode(buf, cv2.IMREAD_COLOR) is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

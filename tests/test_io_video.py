"""The video reader (avface.io.video) that preprocessing and `avface reconstruct` share: containers, variable frame
rate, rotation, audio on the video's clock, bad files (real PyAV files built here)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from avface.data.testing import synthetic_audio, synthetic_frames
from avface.io.media import write_mp4, write_wav
from avface.io.video import (
    AudioTrack,
    InputError,
    InputLimits,
    iter_frames,
    iter_model_frames,
    model_timeline,
    scan_video,
)


def write_video(path, frames, pts_ms, codec="libx264", rotation=0, audio=None, audio_rate=48000, layout="stereo",
                fmt=None, pix_fmt="yuv420p"):
    """A video with frame ``i`` at ``pts_ms[i]`` ms (variable frame rate), an optional display rotation and audio."""
    avi = str(path).endswith(".avi")  # AVI: constant frame rate only, frame i at pts i
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if not avi:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio is not None:
            a = c.add_stream("libopus" if codec.startswith("libvpx") else "aac", rate=audio_rate, layout=layout)
        for f, t in zip(frames, pts_ms, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if avi:
                vf.pts = int(round(t / 40))
            else:
                vf.pts, vf.time_base = int(t), Fraction(1, 1000)
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
        if a is not None:
            ch = 2 if layout == "stereo" else 1
            n = a.codec_context.frame_size or 1024
            for i in range(0, len(audio), n):
                chunk = np.ascontiguousarray(np.repeat(audio[None, i:i + n], ch, 0), np.float32)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                af.sample_rate, af.pts, af.time_base = audio_rate, i, Fraction(1, audio_rate)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


def test_vfr_rotated_times_and_upright_frames(tmp_path):
    frames = synthetic_frames(12, 48, seed=1)[:, :, :40].copy()  # 48 high, 40 wide (upright)
    frames[:, :6, :6] = 255  # a marker at the upright top-left
    stored = np.ascontiguousarray(np.rot90(frames, -1, axes=(1, 2)))  # stored sideways (40 high, 48 wide)
    pts = np.cumsum([0] + [30 if i % 2 else 55 for i in range(11)])  # irregular: 30/55 ms
    path = write_video(tmp_path / "vfr.mp4", stored, pts, rotation=90, pix_fmt="yuv444p")
    scan = scan_video(path)
    info = scan.info
    assert info.rotation == 90 and (info.width, info.height) == (40, 48)
    got = list(iter_frames(info))
    times = np.array([t for _, t, _ in got])
    assert np.allclose(times, pts / 1000.0, atol=1e-6) and np.array_equal(times, scan.times)
    img = got[3][2]
    assert img.shape == (48, 40, 3)
    assert np.abs(img.astype(int) - frames[3].astype(int)).mean() < 6  # upright again (codec loss only)
    assert img[:6, :6].mean() > 200
    mt, src = model_timeline(times)
    dt = np.median(np.diff(times))
    assert len(mt) == int(np.floor((times[-1] + dt) * 25 + 1e-6))
    # nearest source frame in time
    assert np.all(np.abs(times[src] - mt) <= np.abs(times[np.clip(src + 1, 0, 11)] - mt) + 1e-9)
    assert [k for k, _ in iter_model_frames(info, src)] == list(range(len(mt)))


@pytest.mark.parametrize("fmt,codec", [("mov", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9"),
                                       ("avi", "mpeg4")])
def test_containers_and_audio_resampled_to_16k_mono(tmp_path, fmt, codec):
    t = 20
    audio = synthetic_audio(t / 25, seed=2, sample_rate=48000)
    path = write_video(tmp_path / f"v.{fmt}", synthetic_frames(t, 48, seed=2), np.arange(t) * 40, codec=codec,
                       audio=audio)
    scan = scan_video(path)
    info, times = scan.info, scan.times
    assert info.has_audio and (info.width, info.height) == (48, 48)
    # (the AVI muxer writes the second frame at pts 2 when audio is interleaved; ffprobe shows the same)
    assert len(times) == t and np.allclose(np.diff(times)[1:], 0.04, atol=2e-3) and abs(times[-1] - 0.78) < 0.03
    with scan.audio as a:
        assert a.sample_rate == 16000
        assert abs(a.duration - t / 25) < 0.1
        w = a.window(0.2, 3200)
        assert w.shape == (3200,) and np.abs(w).max() > 0.01
        assert not np.any(a.window(100.0, 160))  # beyond the audio: zeros


def test_separate_audio_file_and_60fps_input(tmp_path):
    wav = write_wav(tmp_path / "a.wav", synthetic_audio(1.0, seed=3))
    with AudioTrack.from_file(wav) as a:
        assert a.offset == 0 and a.num_samples == 16000
    path = write_mp4(tmp_path / "v60.mp4", synthetic_frames(60, 32, seed=3, fps=60), 60.0)
    scan = scan_video(path)
    assert scan.info.fps == pytest.approx(60.0) and not scan.info.has_audio and scan.audio is None
    mt, src = model_timeline(scan.times)
    assert len(mt) == 25 and src[-1] <= 59 and np.all(np.diff(src) >= 2)


def _bad_files(tmp_path):
    good = write_mp4(tmp_path / "good.mp4", synthetic_frames(20, 32, 9), 25.0, synthetic_audio(0.8, 9))
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov (at the end) lost
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with av.open(str(tmp_path / "audio_only.mp4"), "w") as c:
        a = c.add_stream("aac", rate=16000, layout="mono")
        x = synthetic_audio(0.5, 1)
        for i in range(0, len(x), 1024):
            f = av.AudioFrame.from_ndarray(x[None, i:i + 1024].copy(), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i
            c.mux(a.encode(f))
        c.mux(a.encode(None))
    write_mp4(tmp_path / "one_frame.mp4", synthetic_frames(1, 32, 7), 25.0, synthetic_audio(0.04, 7))
    write_mp4(tmp_path / "fast.mp4", synthetic_frames(48, 32, 5), 240.0)
    return tmp_path


@pytest.mark.parametrize("name,limits,words", [
    ("truncated.mp4", None, "unreadable"),
    ("text.mp4", None, "unreadable"),
    ("empty.mp4", None, "empty file (0 bytes)"),
    ("audio_only.mp4", None, "audio only"),
    ("one_frame.mp4", None, "too short"),
    ("missing.mp4", None, "no such file"),
    ("good.mp4", InputLimits(max_width=16, max_height=16), "huge resolution 32x32"),
    ("fast.mp4", InputLimits(max_fps=120.0), "frame rate 240 outside"),
])
def test_bad_inputs_name_the_file_and_the_problem(tmp_path, name, limits, words):
    root = _bad_files(tmp_path)
    with pytest.raises(InputError) as e:
        scan_video(root / name, limits)
    assert str(root / name) in str(e.value) and words in str(e.value)


def test_accepts_what_preprocessing_refuses_by_default(tmp_path):
    root = _bad_files(tmp_path)
    scan = scan_video(root / "fast.mp4")  # 240 fps: any frame rate up to 1000 by default
    assert len(model_timeline(scan.times)[0]) == 5
    with pytest.raises(InputError, match="no audio stream"):
        AudioTrack.from_file(root / "fast.mp4")

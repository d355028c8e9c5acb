"""Writing media files (mp4: H.264 video + AAC audio in one file, via PyAV; PCM wav), reading wav and container
facts. Decoding videos and their audio: :mod:`avface.io.video`.

Conventions (docs/ARCHITECTURE.md): frames are ``(T, H, W, 3)`` uint8 RGB; audio is ``(N,)`` float32 in [-1, 1],
mono. Every writer is atomic (the file is either absent or complete). Every failure raises :class:`MediaError`
naming the file.

A/V alignment: the AAC encoder's priming samples are recorded in the mp4 edit list by FFmpeg's muxer and
dropped again by the decoder, so ``read_audio(write_mp4(..., audio))`` (:mod:`avface.io.video`, the reader) has the
original length up to the last partial AAC frame (at most 1024 samples of zero padding at the end, which
``read_audio`` keeps; use ``num_samples`` to cut to a known length).
"""

from __future__ import annotations

import os
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avface.utils.files import atomic_path

__all__ = [
    "MediaError",
    "write_mp4",
    "write_wav",
    "read_wav",
    "probe",
    "rgb_to_yuv420p",
]

_AAC_FRAME = 1024


class MediaError(RuntimeError):
    """A media file could not be written, opened or decoded; the message names the file."""


def _as_rate(fps: float | int | Fraction) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    else:
        rate = Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _check_frames(frames: np.ndarray, path: os.PathLike | str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8, got {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError(f"{path}: no frames to write")
    if h % 2 or w % 2:
        raise ValueError(f"{path}: H.264 yuv420p needs even width and height, got {w}x{h}")
    return np.ascontiguousarray(frames)


def _check_audio(audio: np.ndarray, path: os.PathLike | str) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"{path}: audio must be mono (N,), got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{path}: audio must be float in [-1, 1], got {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{path}: audio contains NaN or inf")
    return np.clip(audio.astype(np.float32), -1.0, 1.0)


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    crf: int = 20,
    preset: str = "veryfast",
    threads: int | None = None,
    audio_bitrate: int = 64000,
    deterministic: bool = True,
) -> Path:
    """Write ``frames`` (T, H, W, 3) uint8 RGB and optional mono ``audio`` (N,) float32 to one mp4, atomically.

    Video: H.264 (libx264), yuv420p, constant frame rate ``fps`` (frame i at time i / fps). Audio: AAC-LC mono at
    ``sample_rate`` Hz, starting at time 0. ``threads`` limits libx264's threads (None = FFmpeg's choice).
    ``deterministic``: the same input gives the same bytes. libx264's assembly kernels read a few bytes past the
    frame planes PyAV hands them (uninitialised padding), which made ~1 run in 3 encode differently; with
    ``deterministic`` x264 runs its C kernels (``asm=0``: encoding ~2x slower, 0.5 s for 2 s of 224x224) on one
    thread.
    Returns ``Path(path)``.
    """
    path = Path(path)
    frames = _check_frames(frames, path)
    rate = _as_rate(fps)
    if audio is not None:
        audio = _check_audio(audio, path)
        if int(sample_rate) <= 0:
            raise ValueError(f"{path}: sample_rate must be positive, got {sample_rate}")
    t, h, w, _ = frames.shape
    try:
        with atomic_path(path, suffix=".mp4") as tmp:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                vstream = container.add_stream("libx264", rate=rate)
                vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
                options = {"crf": str(crf), "preset": preset}
                if threads is not None or deterministic:
                    options["threads"] = str(int(threads or 1) if not deterministic else 1)
                if deterministic:
                    options["x264-params"] = "asm=0"
                vstream.options = options
                vstream.codec_context.time_base = 1 / rate
                astream = None
                if audio is not None:
                    astream = container.add_stream("aac", rate=int(sample_rate), layout="mono")
                    astream.bit_rate = int(audio_bitrate)
                    astream.codec_context.time_base = Fraction(1, int(sample_rate))

                # Interleave by time so the muxer never has to buffer a whole stream.
                a_pos = 0
                n_audio = 0 if audio is None else len(audio)
                for i in range(t):
                    frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frames[i]), format="yuv420p")
                    frame.pts = i
                    frame.time_base = 1 / rate
                    container.mux(vstream.encode(frame))
                    if astream is not None:
                        until = min(n_audio, int(round((i + 1) / rate * int(sample_rate))))
                        a_pos = _encode_audio(container, astream, audio, a_pos, until, int(sample_rate))
                if astream is not None:
                    _encode_audio(container, astream, audio, a_pos, n_audio, int(sample_rate))
                    container.mux(astream.encode(None))
                container.mux(vstream.encode(None))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"cannot write {path}: {e}") from e
    return path


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3H/2, W) uint8 planar yuv420p (BT.601, limited range, 2x2 chroma averaging).

    Done here rather than by swscale because swscale's SIMD paths depend on the memory alignment of the input,
    which made identical frames encode to different files from run to run; this conversion is exact and
    deterministic, so the same frames always give the same mp4.
    """
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    def u8(c: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(c + 0.5), 0, 255).astype(np.uint8)

    return np.concatenate([u8(y), u8(sub(u)).reshape(h // 4, w), u8(sub(v)).reshape(h // 4, w)], axis=0)


def _encode_audio(container, stream, audio: np.ndarray, start: int, stop: int, sample_rate: int) -> int:
    """Encode whole AAC frames of ``audio[start:stop]``, plus the tail when ``stop == len(audio)``."""
    pos = start
    while pos < stop and (stop - pos >= _AAC_FRAME or stop == len(audio)):
        chunk = audio[pos : min(pos + _AAC_FRAME, stop)]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = pos
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
        pos += len(chunk)
    return pos


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise MediaError(f"no such media file: {path}")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise MediaError(f"cannot open {path}: {e}") from e


def probe(path: str | os.PathLike) -> dict:
    """Container facts without decoding: ``num_frames, fps, width, height, video_duration, sample_rate,
    audio_channels, audio_duration, video_codec, audio_codec`` (audio keys None without an audio stream)."""
    with _open(path) as container:
        info: dict = {"video_codec": None, "audio_codec": None, "num_frames": None, "fps": None,
                      "width": None, "height": None, "video_duration": None, "sample_rate": None,
                      "audio_channels": None, "audio_duration": None}
        if container.streams.video:
            v = container.streams.video[0]
            info.update(video_codec=v.codec_context.name, num_frames=int(v.frames) or None,
                        fps=float(v.average_rate) if v.average_rate else None,
                        width=v.codec_context.width, height=v.codec_context.height,
                        video_duration=float(v.duration * v.time_base) if v.duration else None)
        if container.streams.audio:
            a = container.streams.audio[0]
            info.update(audio_codec=a.codec_context.name, sample_rate=a.codec_context.sample_rate,
                        audio_channels=a.codec_context.channels,
                        audio_duration=float(a.duration * a.time_base) if a.duration else None)
    return info


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write mono ``audio`` (N,) float in [-1, 1] as 16-bit PCM wav, atomically. Returns ``Path(path)``."""
    path = Path(path)
    audio = _check_audio(audio, path)
    pcm = np.round(audio * 32767.0).astype("<i2")
    try:
        with atomic_path(path, suffix=".wav") as tmp:
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(int(sample_rate))
                w.writeframes(pcm.tobytes())
    except OSError as e:
        raise MediaError(f"cannot write {path}: {e}") from e
    return path


def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a PCM (8/16/24/32-bit int) or float wav -> ``(audio (N,) float32 mono, sample_rate)``.

    Channels are averaged. With ``sample_rate`` the audio is resampled (polyphase) to it.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"no such wav file: {path}")
    from scipy.io import wavfile

    try:
        sr, data = wavfile.read(str(path))
    except (ValueError, OSError) as e:
        raise MediaError(f"cannot read wav {path}: {e}") from e
    if data.dtype == np.uint8:
        audio = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        audio = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    else:
        audio = data.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate is not None and int(sample_rate) != int(sr):
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sample_rate), int(sr))
        audio = resample_poly(audio, int(sample_rate) // g, int(sr) // g).astype(np.float32)
        sr = int(sample_rate)
    return audio.astype(np.float32), int(sr)

"""Input videos for reconstruction: probing and checks, upright frames with their times, the 25 fps model timeline,
16 kHz mono audio; all streamed, so memory does not grow with the video's length.

* Containers: whatever FFmpeg (PyAV) opens: mp4, mov, mkv, webm, avi, ...; any resolution up to
  :attr:`InputLimits.max_width` x :attr:`InputLimits.max_height` and any frame rate in
  [:attr:`InputLimits.min_fps`, :attr:`InputLimits.max_fps`].
* Times: each decoded frame's presentation time (``frame.time``, so variable frame rate is handled), relative to the
  first frame. A frame without a time gets the previous time + 1 / average rate; times are forced increasing.
* Rotation: the display matrix (``frame.rotation``, counter-clockwise degrees) or, where FFmpeg gives none, the
  stream's legacy ``rotate`` tag (clockwise degrees); frames are turned upright (as ``ffmpeg`` autorotates).
* Model timeline (:func:`model_timeline`): frame ``k`` at ``k / 25`` s takes the source frame nearest in time, as
  preprocessing's nearest-frame resampling (:func:`avface.data.clip.resample_indices`) does for constant rates.
* Audio: the first audio stream of the video or of a separate file, resampled to 16 kHz mono, placed on the video's
  clock (its first sample at the audio stream's start time) and kept in a temporary file (:class:`AudioTrack`).

Bad input raises :class:`InputError` naming the file and the problem, with preprocessing's words for the kinds it
records (unreadable, zero bytes, not a video, no video stream, too short, huge resolution, frame rate outside).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avface.io.media import MediaError

log = logging.getLogger(__name__)

MODEL_FPS = 25.0
SAMPLE_RATE = 16000


class InputError(MediaError):
    """An input file that cannot be reconstructed; ``str(e)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class InputLimits:
    """What :func:`probe_video` accepts. The defaults take any real-world video (8K, 1..1000 fps); lower them to
    refuse what a deployment cannot afford."""

    max_width: int = 8192
    max_height: int = 8192
    min_fps: float = 1.0
    max_fps: float = 1000.0
    min_frames: int = 2  # a single frame is an image, not a video


@dataclass
class VideoInfo:
    """Facts of an input video. ``width`` x ``height`` are of the upright frames (after ``rotation``)."""

    path: str
    width: int
    height: int
    rotation: int  # counter-clockwise degrees applied to the decoded frames (0, 90, 180, 270)
    fps: float  # average frame rate of the container (the timeline uses each frame's own time)
    num_frames: int | None  # the container's count (None when it does not say)
    duration: float | None
    has_audio: bool
    codec: str


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


def _open(path: Path):
    _check_file(path)
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise InputError(path, f"unreadable: not a media file FFmpeg can open, or truncated ({e})") from e


def _tag_rotation(stream) -> int:
    """Legacy ``rotate`` tag (clockwise degrees) as counter-clockwise degrees, 0 without one."""
    tag = (stream.metadata or {}).get("rotate")
    try:
        return (-int(round(float(tag)))) % 360 if tag is not None else 0
    except ValueError:
        return 0


def _frame_rotation(frame, fallback: int) -> int:
    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    rot = rot if rot else fallback
    if rot % 90:
        log.warning("rotation of %d degrees is not a multiple of 90; using %d", rot, 90 * round(rot / 90))
    return (90 * round(rot / 90)) % 360


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded ``(H, W, 3)`` frame upright: rotate it counter-clockwise by ``rotation`` degrees."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def probe_video(path: str | os.PathLike, limits: InputLimits | None = None) -> VideoInfo:
    """Open ``path``, check it against ``limits`` and decode its first frame (rotation, decodability)."""
    limits = limits or InputLimits()
    path = Path(path)
    with _open(path) as c:
        if not c.streams.video:
            what = "audio only: no video stream" if c.streams.audio else "not a video: no video stream"
            raise InputError(path, what)
        s = c.streams.video[0]
        w, h = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
        if w <= 0 or h <= 0:
            raise InputError(path, f"bad frame size {w}x{h}")
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else float("nan")
        if not math.isnan(fps) and not (limits.min_fps <= fps <= limits.max_fps):
            raise InputError(path, f"frame rate {fps:g} outside [{limits.min_fps:g}, {limits.max_fps:g}]")
        duration = float(s.duration * s.time_base) if s.duration and s.time_base else (
            c.duration / 1e6 if c.duration else None)
        frames = int(s.frames) or None
        tag_rot = _tag_rotation(s)
        has_audio = bool(c.streams.audio)
        codec = s.codec_context.name
        try:
            first = next(c.decode(s), None)
        except av.FFmpegError as e:
            raise InputError(path, f"unreadable: cannot decode the first video frame ({e})") from e
        if first is None:
            raise InputError(path, "no decodable video frames (truncated or corrupt)")
        rot = _frame_rotation(first, tag_rot)
    if rot in (90, 270):
        w, h = h, w
    if w > limits.max_width or h > limits.max_height:
        raise InputError(path, f"huge resolution {w}x{h} > max {limits.max_width}x{limits.max_height}")
    if frames is not None and frames < limits.min_frames:
        raise InputError(path, f"too short: {frames} frame(s), a video needs at least {limits.min_frames}")
    if math.isnan(fps):
        fps = MODEL_FPS
    return VideoInfo(str(path), w, h, rot, fps, frames, duration, has_audio, codec)


def iter_frames(info: VideoInfo) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(index, time_s, frame (H, W, 3) u8 RGB upright)`` for every decodable frame, times relative to the
    first frame and strictly increasing. A decoding error after some frames (truncated file) ends the stream
    with a warning; the caller judges whether enough frames came."""
    path = Path(info.path)
    with _open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        tag_rot = _tag_rotation(s)
        t0: float | None = None
        prev = -math.inf
        step = 1.0 / info.fps
        i = 0
        it = c.decode(s)
        while True:
            try:
                frame = next(it, None)
            except (av.FFmpegError, ValueError) as e:
                log.warning("%s: decoding stopped after %d frames (%s); using the frames decoded so far", path, i, e)
                break
            if frame is None:
                break
            t = frame.time
            if t is None:
                t = prev + step if prev > -math.inf else 0.0
            elif t0 is None:
                t0 = float(t)
            t = float(t) - (t0 or 0.0)
            t = max(t, prev + 1e-6) if prev > -math.inf else t
            prev = t
            img = frame.to_ndarray(format="rgb24")
            yield i, t, upright(img, _frame_rotation(frame, tag_rot))
            i += 1


def model_timeline(times: np.ndarray, fps: float = MODEL_FPS) -> tuple[np.ndarray, np.ndarray]:
    """The model's constant-rate timeline over source frames at ``times (N,)`` (s, increasing from 0).

    The video lasts until its last frame ends (last time + the median frame interval); it has
    ``M = max(1, floor(duration * fps))`` model frames at ``k / fps``, each taking the nearest source frame.
    Returns ``(model_times (M,) f64, source_index (M,) i64)``.
    """
    times = np.asarray(times, np.float64)
    n = len(times)
    if n == 0:
        raise ValueError("no frames")
    dt = float(np.median(np.diff(times))) if n > 1 else 1.0 / fps
    duration = times[-1] + dt
    m = max(1, int(math.floor(duration * fps + 1e-6)))
    mt = np.arange(m) / fps
    j = np.clip(np.searchsorted(times, mt), 1, max(n - 1, 1)) if n > 1 else np.zeros(m, np.int64)
    if n > 1:
        left = j - 1
        j = np.where(np.abs(times[left] - mt) <= np.abs(times[j] - mt), left, j)
    return mt, j.astype(np.int64)


def iter_model_frames(info: VideoInfo, source_index: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k, frame)`` for every model frame ``k`` (``source_index`` from :func:`model_timeline`), decoding the
    video once; a source frame used by several model frames (input slower than 25 fps) is yielded for each."""
    k, m = 0, len(source_index)
    last = None
    for i, _, img in iter_frames(info):
        last = img
        while k < m and source_index[k] == i:
            yield k, img
            k += 1
        if k >= m:
            return
    while k < m and last is not None:  # a second decode found fewer frames than the first: repeat the last one
        yield k, last
        k += 1


def scan_times(info: VideoInfo, limits: InputLimits | None = None) -> np.ndarray:
    """Times of every decodable frame (decodes the video once); too few frames -> :class:`InputError`."""
    limits = limits or InputLimits()
    times = np.fromiter((t for _, t, _ in iter_frames(info)), np.float64)
    if len(times) < limits.min_frames:
        raise InputError(info.path, f"too short: {len(times)} decodable frame(s), a video needs at least "
                                    f"{limits.min_frames}")
    return times


class AudioTrack:
    """16 kHz mono audio of an input on the video's clock, in a temporary float32 file read on demand (a long
    video's audio does not sit in memory). ``window(t0, n)`` -> ``n`` samples from video time ``t0`` s, zeros where
    the audio has none. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike, video_start: float | None = None, sample_rate: int = SAMPLE_RATE):
        """``video_start``: container time (s) of the first video frame when the audio comes from the video's own
        container (their start times align them); None for a separate audio file (its first sample at time 0)."""
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        fd, tmp = tempfile.mkstemp(prefix="avface-audio-", suffix=".f32")
        self._file = Path(tmp)
        self.offset = 0  # sample index of video time 0 in the file
        n = 0
        try:
            with os.fdopen(fd, "wb") as f, _open(self.path) as c:
                if not c.streams.audio:
                    raise InputError(self.path, "no audio stream")
                s = c.streams.audio[0]
                res = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
                start = None
                try:
                    for frame in c.decode(s):
                        if start is None:
                            start = float(frame.time) if frame.time is not None else 0.0
                        for out in res.resample(frame):
                            a = out.to_ndarray().reshape(-1).astype("<f4")
                            f.write(a.tobytes())
                            n += len(a)
                except (av.FFmpegError, ValueError) as e:
                    log.warning("%s: audio decoding stopped after %.2f s (%s)", self.path, n / self.sample_rate, e)
                for out in res.resample(None):
                    a = out.to_ndarray().reshape(-1).astype("<f4")
                    f.write(a.tobytes())
                    n += len(a)
            # audio that starts after the first video frame is delayed by the difference, and vice versa
            if video_start is not None and start is not None:
                self.offset = int(round((video_start - start) * self.sample_rate))
        except BaseException:
            self._file.unlink(missing_ok=True)
            raise
        self.num_samples = n
        # read on demand (not memory-mapped: touched pages of a map would count as the process's memory)
        self._fh = open(self._file, "rb")  # noqa: SIM115 - closed by close()
        if n == 0:
            log.warning("%s: the audio stream has no samples", self.path)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def window(self, t0: float, n: int) -> np.ndarray:
        """``n`` samples (f32) starting at video time ``t0`` seconds; zeros outside the audio."""
        a = int(round(t0 * self.sample_rate)) + self.offset
        out = np.zeros(n, np.float32)
        lo, hi = max(a, 0), min(a + n, self.num_samples)
        if hi > lo:
            self._fh.seek(4 * lo)
            out[lo - a: hi - a] = np.fromfile(self._fh, "<f4", count=hi - lo)
        return out

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._file.unlink(missing_ok=True)

    def __enter__(self) -> AudioTrack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._file.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def video_start_time(path: str | os.PathLike) -> float:
    """Presentation time (s) of the first video frame on the container's clock (0 without one)."""
    with _open(Path(path)) as c:
        for frame in c.decode(c.streams.video[0]):
            return float(frame.time or 0.0)
    return 0.0

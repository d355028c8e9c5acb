"""Reading a video: the one reader of preprocessing, inference, evaluation and the occlusion job.

Whatever FFmpeg (PyAV) opens (mp4, mov, mkv, webm, avi, ...) within :class:`InputLimits`. A caller reads an input
in passes, each opening the file once:

1. :func:`scan_video`: the checks, every decodable frame's time and the audio (:class:`AudioTrack`), in one demux.
2. :func:`iter_frames` / :func:`iter_model_frames`: upright RGB frames, streamed (as many passes as the caller needs).

* Times: each decoded frame's presentation time (``frame.time``, so variable frame rate is handled), relative to the
  first frame. A frame without a time gets the previous time + 1 / average rate; times are forced increasing.
* Rotation: the display matrix (``frame.rotation``, counter-clockwise degrees) or, where FFmpeg gives none, the
  stream's legacy ``rotate`` tag (clockwise degrees); frames are turned upright (as ``ffmpeg`` autorotates).
* Model timeline (:func:`model_timeline`): model frame ``k`` at ``k / fps`` s takes the source frame nearest in
  time; the model's frame rate is a parameter (:data:`MODEL_FPS` by default).
* Audio: resampled to 16 kHz mono and placed on the video's clock: its first sample plays at the audio stream's
  start time minus the first video frame's (audio that starts late is preceded by silence).
* Resizing whole frames: :func:`resize_frames` (area averaging when shrinking, bilinear otherwise).

Bad input raises :class:`InputError` (a :class:`~avface.io.media.MediaError`) naming the file and the problem:
no such file, empty file, unreadable, not a video / audio only, bad frame size, huge resolution, frame rate
outside the limits, too short, no audio stream.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from avface.io.media import MediaError

__all__ = [
    "MODEL_FPS",
    "SAMPLE_RATE",
    "AudioTrack",
    "InputError",
    "InputLimits",
    "VideoInfo",
    "VideoScan",
    "iter_frames",
    "iter_model_frames",
    "model_timeline",
    "read_audio",
    "read_video",
    "resize_frames",
    "scan_video",
    "upright",
]

log = logging.getLogger(__name__)

#: The model's frame rate where a caller does not give one (the paper's 25 fps).
MODEL_FPS = 25.0
#: Audio sample rate of every model input (16 kHz mono).
SAMPLE_RATE = 16000


class InputError(MediaError):
    """An input that cannot be read; ``str(e)`` is ``"<path>: <problem>"``. ``limit``: the file is readable but
    outside :class:`InputLimits` (frame size, frame rate, length)."""

    def __init__(self, path: str | os.PathLike, problem: str, limit: bool = False):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
        self.limit = limit


@dataclass
class InputLimits:
    """What :func:`scan_video` accepts. The defaults take any real-world video (8K, 1..1000 fps); lower them to
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
    audio_offset: float | None = None  # s: video time of the audio's first sample (> 0: audio starts late)


@dataclass
class VideoScan:
    """The first pass over an input (:func:`scan_video`): its facts, the time of every decodable frame
    ``(N,)`` f64 s (from 0, increasing), and its audio on the video's clock (None when not asked for or absent)."""

    info: VideoInfo
    times: np.ndarray
    audio: AudioTrack | None


# ------------------------------------------------------------------------------------------------ opening
def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


def _open(path: Path):
    """The one place a media file is opened for reading."""
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


def _set_threads(stream, threads: int | None) -> None:
    """``threads`` None: FFmpeg's choice (frame + slice threads); n: n decoder threads. The frames are the same."""
    if threads is None:
        stream.thread_type = "AUTO"
    else:
        stream.codec_context.thread_count = max(1, int(threads))


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded ``(H, W, 3)`` frame upright: rotate it counter-clockwise by ``rotation`` degrees."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


# ------------------------------------------------------------------------------------------------ audio
class AudioTrack:
    """Mono audio at ``sample_rate`` on the video's clock, in a temporary float32 file read on demand (a long
    video's audio does not sit in memory). ``window(t0, n)`` -> ``n`` samples from video time ``t0`` s, zeros where
    the audio has none. Made by :func:`scan_video` (the video's own audio) or :meth:`from_file` (a separate audio
    file, its first sample at video time 0). Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE):
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.offset = 0  # sample index of video time 0 in the file (< 0: the audio starts late)
        self.num_samples = 0
        self.start: float | None = None  # container time (s) of the first decoded audio frame
        fd, tmp = tempfile.mkstemp(prefix="avface-audio-", suffix=".f32")
        self._file = Path(tmp)
        self._out = os.fdopen(fd, "wb")
        self._fh = None
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)

    @classmethod
    def from_file(cls, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> AudioTrack:
        """The first audio stream of a separate file (wav, m4a, a video's own audio without its clock)."""
        track = cls(path, sample_rate)
        try:
            with _open(track.path) as c:
                if not c.streams.audio:
                    raise InputError(track.path, "no audio stream")
                s = c.streams.audio[0]
                try:
                    for frame in c.decode(s):
                        track._add(frame)
                except (av.FFmpegError, ValueError) as e:
                    track._stopped(e)
            track._seal(None)
        except BaseException:
            track.close()
            raise
        return track

    def _add(self, frame) -> None:
        if self.start is None:
            self.start = float(frame.time) if frame.time is not None else 0.0
        for out in self._resampler.resample(frame):
            self._write(out)

    def _write(self, out) -> None:
        a = out.to_ndarray().reshape(-1).astype("<f4")
        self._out.write(a.tobytes())
        self.num_samples += len(a)

    def _stopped(self, error: Exception) -> None:
        log.warning("%s: audio decoding stopped after %.2f s (%s)", self.path, self.num_samples / self.sample_rate,
                    error)

    def _seal(self, video_start: float | None) -> None:
        """Flush the resampler; ``video_start``: container time (s) of the first video frame when the audio comes
        from the video's own container (their start times align them), None for a separate file."""
        for out in self._resampler.resample(None):
            self._write(out)
        self._out.close()
        if video_start is not None and self.start is not None:
            self.offset = int(round((video_start - self.start) * self.sample_rate))
        # read on demand (not memory-mapped: touched pages of a map would count as the process's memory)
        self._fh = open(self._file, "rb")  # noqa: SIM115 - closed by close()
        if self.num_samples == 0:
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

    def valid(self, times: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: the audio has a sample at each video time ``times (N,)`` s."""
        s = np.round(np.asarray(times) * self.sample_rate).astype(np.int64) + self.offset
        return (s >= 0) & (s < self.num_samples)

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()
        if self._fh is not None and not self._fh.closed:
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


# ------------------------------------------------------------------------------------------------ pass 1: scan
def scan_video(path: str | os.PathLike, limits: InputLimits | None = None, audio: bool = True,
               sample_rate: int = SAMPLE_RATE, threads: int | None = None) -> VideoScan:
    """Open ``path`` once: check it against ``limits``, decode every video frame for its time (no pixel
    conversion) and, with ``audio``, decode its audio into an :class:`AudioTrack` at ``sample_rate``.

    A decoding error after some frames (truncated file) ends the scan with a warning; fewer than
    ``limits.min_frames`` decodable frames -> :class:`InputError` ``too short``.
    """
    limits = limits or InputLimits()
    path = Path(path)
    track: AudioTrack | None = None
    try:
        with _open(path) as c:
            info, vs = _stream_info(c, path, limits)
            streams = [vs]
            if audio and c.streams.audio:
                track = AudioTrack(path, sample_rate)
                streams.append(c.streams.audio[0])
            _set_threads(vs, threads)
            times, video_start = _scan_packets(c, streams, info, limits, track)
        if track is not None:
            track._seal(video_start)
            info.audio_offset = -track.offset / track.sample_rate
    except BaseException:
        if track is not None:
            track.close()
        raise
    if len(times) < limits.min_frames:
        if track is not None:
            track.close()
        raise InputError(path, f"too short: {len(times)} decodable frame(s), a video needs at least "
                               f"{limits.min_frames}", limit=True)
    return VideoScan(info, times, track)


def _stream_info(c, path: Path, limits: InputLimits) -> tuple[VideoInfo, object]:
    """The video stream's facts and the checks that need no decoding."""
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
        raise InputError(path, f"frame rate {fps:g} outside [{limits.min_fps:g}, {limits.max_fps:g}]", limit=True)
    duration = float(s.duration * s.time_base) if s.duration and s.time_base else (
        c.duration / 1e6 if c.duration else None)
    frames = int(s.frames) or None
    if frames is not None and frames < limits.min_frames:
        raise InputError(path, f"too short: {frames} frame(s), a video needs at least {limits.min_frames}",
                         limit=True)
    fps = MODEL_FPS if math.isnan(fps) else fps
    info = VideoInfo(str(path), w, h, _tag_rotation(s), fps, frames, duration, bool(c.streams.audio),
                     s.codec_context.name)
    return info, s


def _scan_packets(c, streams: list, info: VideoInfo, limits: InputLimits,
                  track: AudioTrack | None) -> tuple[np.ndarray, float]:
    """Demux ``streams`` (video first, then optionally audio) once: the video frames' times and the audio samples.
    Sets ``info.rotation`` (and the upright size) from the first frame. Returns ``(times (N,), first video time)``."""
    path = Path(info.path)
    vs = streams[0]
    tag_rot = info.rotation
    times: list[float] = []
    clock = _FrameClock(info.fps)
    video_ok = audio_ok = True
    packets = c.demux(*streams)
    while video_ok or (track is not None and audio_ok):
        try:
            packet = next(packets, None)
        except (av.FFmpegError, ValueError) as e:
            log.warning("%s: reading stopped after %d frames (%s); using the frames decoded so far", path, len(times),
                        e)
            break
        if packet is None:
            break
        if packet.stream is vs:
            if not video_ok:
                continue
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as e:
                if not times:
                    raise InputError(path, f"unreadable: cannot decode the first video frame ({e})") from e
                log.warning("%s: decoding stopped after %d frames (%s); using the frames decoded so far", path,
                            len(times), e)
                video_ok = False
                continue
            for frame in frames:
                if not times:
                    _first_frame(info, frame, tag_rot, limits)
                times.append(clock.time(frame.time))
        elif audio_ok:
            try:
                for frame in packet.decode():
                    track._add(frame)
            except (av.FFmpegError, ValueError) as e:
                track._stopped(e)
                audio_ok = False
    if not times:
        raise InputError(path, "no decodable video frames (truncated or corrupt)")
    return np.asarray(times, np.float64), clock.start


class _FrameClock:
    """Frame times from 0, strictly increasing: the first timestamp is time zero, a frame without one comes one
    nominal step after its predecessor, a repeated or backwards one 1 us after it (the scan and the frame pass
    must give every frame the same time)."""

    def __init__(self, fps: float) -> None:
        self.step = 1.0 / fps
        self.start: float = 0.0  # the first timestamp (s, stream clock)
        self._started = False
        self._prev = -math.inf

    def time(self, stamp: float | None) -> float:
        if stamp is None:
            t = self._prev + self.step if self._prev > -math.inf else 0.0
        else:
            if not self._started:
                self.start, self._started = float(stamp), True
            t = float(stamp) - self.start
        t = max(t, self._prev + 1e-6) if self._prev > -math.inf else t
        self._prev = t
        return t


def _first_frame(info: VideoInfo, frame, tag_rot: int, limits: InputLimits) -> None:
    """Rotation and upright size from the first decoded frame, and the size limits."""
    info.rotation = _frame_rotation(frame, tag_rot)
    if info.rotation in (90, 270):
        info.width, info.height = info.height, info.width
    if info.width > limits.max_width or info.height > limits.max_height:
        raise InputError(info.path, f"huge resolution {info.width}x{info.height} > max {limits.max_width}x"
                                    f"{limits.max_height}", limit=True)


# ------------------------------------------------------------------------------------------------ pass 2: frames
def _decoded_frames(info: VideoInfo, threads: int | None) -> Iterator[tuple[int, float, Callable[[], np.ndarray]]]:
    """``(index, time_s, to_rgb)`` of every decodable frame; ``to_rgb()`` converts it (upright ``(H, W, 3)`` u8 RGB),
    so a caller pays the conversion only for the frames it uses."""
    path = Path(info.path)
    with _open(path) as c:
        s = c.streams.video[0]
        _set_threads(s, threads)
        tag_rot = _tag_rotation(s)
        rgb = VideoReformatter()  # one converter for the whole stream: twice as fast as a new one per frame
        clock = _FrameClock(info.fps)
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
            t = clock.time(frame.time)
            yield i, t, lambda f=frame: upright(rgb.reformat(f, format="rgb24").to_ndarray(),
                                                _frame_rotation(f, tag_rot))
            i += 1


def iter_frames(info: VideoInfo, threads: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(index, time_s, frame (H, W, 3) u8 RGB upright)`` for every decodable frame of ``info.path``, times
    relative to the first frame and strictly increasing (as :func:`scan_video`'s). A decoding error after some
    frames (truncated file) ends the stream with a warning; the caller judges whether enough frames came."""
    for i, t, to_rgb in _decoded_frames(info, threads):
        yield i, t, to_rgb()


def model_timeline(times: np.ndarray, fps: float = MODEL_FPS) -> tuple[np.ndarray, np.ndarray]:
    """The model's constant-rate timeline over source frames at ``times (N,)`` (s, increasing from 0).

    The video lasts until its last frame ends (last time + the median frame interval); it has
    ``M = max(1, floor(duration * fps))`` model frames at ``k / fps``, each taking the nearest source frame (the
    earlier one on a tie). Returns ``(model_times (M,) f64, source_index (M,) i64)``.
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


def iter_model_frames(info: VideoInfo, source_index: np.ndarray,
                      threads: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k, frame)`` for every model frame ``k`` (``source_index (M,)`` from :func:`model_timeline`),
    decoding the video once and converting only the source frames it uses (a 60 fps input: 5 in 12); a source frame
    used by several model frames (input slower than the model's rate) is yielded for each. Source frames past the
    last decodable one (a truncated file) repeat the last decoded frame."""
    k, m = 0, len(source_index)
    last_rgb = None  # the last decoded frame's conversion (source frames no model frame takes are not converted)
    for i, _, to_rgb in _decoded_frames(info, threads):
        last_rgb, img = to_rgb, None
        while k < m and source_index[k] == i:
            img = to_rgb() if img is None else img
            yield k, img
            k += 1
        if k >= m:
            return
    if k < m and last_rgb is not None:
        img = last_rgb()
        while k < m:
            yield k, img
            k += 1


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whole frames ``(..., H, W, C)`` u8 -> ``(..., height, width, C)``: area averaging when both sides shrink
    (no aliasing), bilinear otherwise; unchanged (no copy) at the same size."""
    h, w = frames.shape[-3:-1]
    if (h, w) == (height, width):
        return frames
    interp = cv2.INTER_AREA if width < w and height < h else cv2.INTER_LINEAR
    if frames.ndim == 3:
        return cv2.resize(frames, (width, height), interpolation=interp)
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


# ------------------------------------------------------------------------------------------------ whole files
def read_video(path: str | os.PathLike, max_frames: int = 0) -> tuple[np.ndarray, float]:
    """Decode the first ``max_frames`` (0 = all) upright frames of ``path`` -> ``(frames (T, H, W, 3) u8 RGB,
    average fps)``. Holds the whole clip: for short clips and tests; long inputs stream with :func:`iter_frames`."""
    path = Path(path)
    with _open(path) as c:
        info, _ = _stream_info(c, path, InputLimits(min_fps=0.0, max_fps=math.inf, min_frames=1))
    frames = []
    for i, _, img in iter_frames(info):
        frames.append(img)
        if i + 1 == max_frames:
            break
    if not frames:
        raise InputError(path, "no decodable video frames (truncated or corrupt)")
    return np.stack(frames), info.fps


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, num_samples: int | None = None) -> np.ndarray:
    """Decode the first audio stream of ``path`` (mp4, wav, m4a, ...) -> mono float32 ``(N,)`` at ``sample_rate``
    Hz from its first sample (not on a video's clock: :func:`scan_video` for that). Channels are averaged, any rate
    resampled (FFmpeg's swresample). With ``num_samples`` the result is cut or zero-padded to that length."""
    with AudioTrack.from_file(path, sample_rate) as track:
        audio = track.window(0.0, track.num_samples if num_samples is None else int(num_samples))
    return audio

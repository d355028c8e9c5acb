"""Align a feature sequence at any rate to video frames as VOCA does: interpolate, zero-pad, cut windows.

VOCA (``utils/audio_handler.py``) interpolates DeepSpeech logits (50 Hz) to the video rate with ``np.interp`` on
timestamps ``k / rate`` (values outside the input range are clamped to the edge values), zero-pads
``window // 2`` rows at both ends and cuts windows of ``window`` rows with stride 1: the window of video frame
``i`` holds interpolated rows ``i - 8 .. i + 7`` (16 rows, zeros outside the clip).

:func:`frame_windows` generalises this with ``per_frame`` interpolated rows per video frame
(``per_frame = 1`` is VOCA exactly; ``per_frame = 2`` gives the 50 Hz timeline at 25 fps used by ``mel``,
``wav2vec2`` and ``phones``): rows are placed at times ``j / (per_frame * fps)``, and the window of frame ``i`` is
rows ``per_frame * i - window // 2 .. per_frame * i + window // 2 - 1``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interpolate_features", "frame_windows"]


def interpolate_features(features: np.ndarray, input_times: np.ndarray, output_times: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``features (N, F)`` sampled at ``input_times (N,)`` onto ``output_times (M,)``.

    Outside the input range the edge values are repeated (``np.interp``), as in VOCA. Returns ``(M, F)`` f32.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, F), got {features.shape}")
    m, f = len(output_times), features.shape[1]
    if len(features) == 0:
        return np.zeros((m, f), np.float32)
    out = np.empty((m, f), np.float64)
    for k in range(f):
        out[:, k] = np.interp(output_times, input_times, features[:, k])
    return out.astype(np.float32)


def frame_windows(
    features: np.ndarray,
    input_rate: float,
    num_frames: int,
    fps: float,
    per_frame: int = 2,
    window: int = 16,
    input_offset: float = 0.0,
) -> np.ndarray:
    """Per-video-frame windows of a feature sequence.

    Args:
        features: ``(N, F)`` rows at times ``input_offset + k / input_rate`` seconds.
        input_rate: rows per second of ``features``.
        num_frames: number of video frames ``T``.
        fps: video frame rate.
        per_frame: interpolated rows per video frame (1 = VOCA's DeepSpeech alignment).
        window: rows per window (16).
        input_offset: time of row 0 in seconds (e.g. the centre of the first analysis window).
    Returns:
        ``(T, window, F)`` float32.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    features = np.asarray(features)
    in_times = input_offset + np.arange(len(features)) / float(input_rate)
    out_len = per_frame * num_frames
    out_times = np.arange(out_len) / float(per_frame * fps)
    rows = interpolate_features(features, in_times, out_times)
    half = window // 2
    padded = np.concatenate([np.zeros((half, rows.shape[1]), np.float32), rows,
                             np.zeros((window - half, rows.shape[1]), np.float32)], axis=0)
    starts = per_frame * np.arange(num_frames)  # padded index of row (centre - half)
    idx = starts[:, None] + np.arange(window)[None, :]
    return np.ascontiguousarray(padded[idx], dtype=np.float32)

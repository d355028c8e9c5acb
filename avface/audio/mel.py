"""``mel``: log-mel spectrogram (no weights), the default audio feature.

80 mel bins (torchaudio defaults: ``mel_scale="htk"``, no filter norm), 25 ms Hann window
(400 samples), 10 ms hop (160 samples), ``n_fft = 512``, centred frames (row ``k`` is centred at ``k * 10 ms``),
power spectrum, natural log of ``max(mel, 1e-5)``. Rows are then aligned to video frames with
:func:`avface.audio.windows.frame_windows` at 2 rows per frame (50 Hz at 25 fps): ``(T, 16, 80)``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from avface.audio.windows import frame_windows

SAMPLE_RATE = 16000
N_MELS = 80
WIN = 400
HOP = 160
N_FFT = 512


@functools.lru_cache(maxsize=4)
def _transform(n_mels: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP, n_mels=n_mels, center=True,
        power=2.0,
    )


def log_mel(waveform: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """``waveform (N,)`` f32 16 kHz -> ``(1 + N // 160, n_mels)`` f32 log-mel rows at 100 Hz."""
    x = torch.as_tensor(np.asarray(waveform, np.float32))
    if x.numel() < 2:
        x = torch.nn.functional.pad(x, (0, 2 - x.numel()))
    with torch.no_grad():
        mel = _transform(n_mels)(x)  # (n_mels, frames)
    return torch.log(mel.clamp_min(1e-5)).T.contiguous().numpy()


def mel_features(waveform: np.ndarray, num_frames: int, fps: float, n_mels: int = N_MELS, window: int = 16,
                 per_frame: int = 2) -> np.ndarray:
    """``(num_frames, window, n_mels)`` log-mel windows aligned to the video frames."""
    rows = log_mel(waveform, n_mels)
    return frame_windows(rows, SAMPLE_RATE / HOP, num_frames, fps, per_frame=per_frame, window=window)

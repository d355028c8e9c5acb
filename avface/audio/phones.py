"""``phones``: phone posteriors from pocketsphinx's offline phone recogniser (optional dependency).

pocketsphinx 5.1.1 ships the CMU en-us acoustic model and a phone language model: in "allphone" mode it returns
a phone segmentation with 10 ms frames. Each 10 ms frame becomes a one-hot vector over :data:`PHONES` (39 CMU
phones, silence, noise, speech-noise; anything else counts as silence); pairs of frames are averaged into 20 ms
windows (a posterior: 0, 0.5 or 1 per phone), row k centred at ``20 k + 10`` ms. These 50 Hz rows are aligned to
the video frames with 2 rows per frame and windows of 16 centred on each frame: ``(T, 16, 42)``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from avface.audio.errors import AudioFeatureError
from avface.audio.windows import frame_windows

PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH",
    "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
    "SIL", "+NSN+", "+SPN+",
)
_INDEX = {p: i for i, p in enumerate(PHONES)}


@functools.lru_cache(maxsize=1)
def _decoder():
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as e:
        raise AudioFeatureError(
            "audio.kind=phones needs pocketsphinx (optional dependency): pip install pocketsphinx==5.1.1"
        ) from e
    model = get_model_path()
    return Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                   allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
                   lw=2.0, beam=1e-20, pbeam=1e-20, loglevel="FATAL")


def phone_segments(waveform: np.ndarray) -> list[tuple[str, int, int]]:
    """``[(phone, start_frame, end_frame)]`` with inclusive 10 ms frame indices."""
    from avface.audio.deepspeech import to_int16

    dec = _decoder()
    dec.start_utt()
    dec.process_raw(to_int16(waveform).tobytes(), full_utt=True)
    dec.end_utt()
    return [(s.word, int(s.start_frame), int(s.end_frame)) for s in dec.seg()]


def phone_rows(waveform: np.ndarray) -> np.ndarray:
    """``(ceil(N / 320), 42)`` phone posteriors per 20 ms window."""
    n10 = max(1, int(np.ceil(len(waveform) / 160)))
    onehot = np.zeros((n10 + 1, len(PHONES)), np.float32)
    onehot[:, _INDEX["SIL"]] = 1.0
    for phone, a, b in phone_segments(waveform):
        a, b = max(0, a), min(n10 - 1, b)
        if b < a:
            continue
        onehot[a:b + 1] = 0.0
        onehot[a:b + 1, _INDEX.get(phone, _INDEX["SIL"])] = 1.0
    n20 = (n10 + 1) // 2
    return onehot[: 2 * n20].reshape(n20, 2, -1).mean(axis=1)


def phone_features(waveform: np.ndarray, num_frames: int, fps: float, window: int = 16,
                   per_frame: int = 2) -> np.ndarray:
    """``(num_frames, window, 42)`` phone posterior windows aligned to the video frames."""
    rows = phone_rows(waveform)
    return frame_windows(rows, 50.0, num_frames, fps, per_frame=per_frame, window=window, input_offset=0.01)

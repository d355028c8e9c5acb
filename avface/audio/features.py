"""One entry point for all audio features: :func:`extract_audio_features`.

Every kind returns ``(num_frames, 16, F)`` float32: per video frame a window of 16 feature rows centred on the
frame (zeros beyond the clip), see :mod:`avface.audio.windows` for the exact alignment.

=============  ====  =====================================================================  =====================
kind           F     rows                                                                   needs
=============  ====  =====================================================================  =====================
``mel``        80    log-mel, 25 ms / 10 ms, interpolated to 2 rows per frame (50 Hz)       nothing (default)
``deepspeech`` 29    DeepSpeech v0.1.0 logits as VOCA: 1 row per frame (16 frames)          graph file + TF
``wav2vec2``   768   torchaudio wav2vec2 base, last layer, 2 tokens per frame                weights file
``phones``     42    pocketsphinx phone posteriors per 20 ms, 2 rows per frame               ``pocketsphinx``
``whisper``    384   Whisper tiny.en encoder output (50 Hz), 2 rows per frame                ``faster-whisper``
=============  ====  =====================================================================  =====================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avface.audio.config import FEATURE_KINDS, AudioConfig
from avface.audio.errors import AudioFeatureError, MissingModelError

__all__ = ["FEATURE_KINDS", "AudioConfig", "AudioFeatureError", "MissingModelError", "check_available",
           "extract_audio_features", "feature_dim"]


def _unknown(kind: str) -> AudioFeatureError:
    return AudioFeatureError(f"unknown audio feature kind {kind!r}; choose one of {FEATURE_KINDS}")


def feature_dim(config: AudioConfig) -> int:
    """F of :func:`extract_audio_features` for ``config.kind`` (wav2vec2: the architecture's embedding size)."""
    kind = config.kind
    if kind == "mel":
        return int(config.n_mels)
    if kind == "deepspeech":
        return 29
    if kind == "wav2vec2":
        return int(config.wav2vec2_arch.get("encoder_embed_dim", 768))
    if kind == "phones":
        from avface.audio.phones import PHONES

        return len(PHONES)
    if kind == "whisper":
        from avface.audio.whisper import WHISPER_DIM

        return WHISPER_DIM
    raise _unknown(kind)


def extract_audio_features(waveform: np.ndarray, num_frames: int, fps: float, config: AudioConfig, *,
                           logits_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Audio features of kind ``config.kind`` aligned to video frames.

    Args:
        waveform: ``(N,)`` float32 in [-1, 1], 16 kHz mono, starting with video frame 0.
        num_frames: number of video frames ``T``.
        fps: video frame rate.
        config: ``kind`` and its settings (``window``; ``n_mels`` for mel; ``deepspeech_graph``;
            ``wav2vec2_weights``, ``wav2vec2_layer``, ``wav2vec2_arch`` (empty = base)).
        logits_fn: deepspeech only: a stand-in for the TF graph, ``(rows, 494) -> (rows, 29)`` (tests).
    Returns:
        ``(num_frames, config.window, F)`` float32.
    """
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    if not np.all(np.isfinite(waveform)):
        raise AudioFeatureError("waveform contains NaN or inf")
    kind, window = config.kind, int(config.window)
    if kind == "mel":
        from avface.audio.mel import mel_features

        return mel_features(waveform, num_frames, fps, n_mels=int(config.n_mels), window=window)
    if kind == "deepspeech":
        from avface.audio.deepspeech import deepspeech_features

        return deepspeech_features(waveform, num_frames, fps, graph_path=config.deepspeech_graph, window=window,
                                   logits_fn=logits_fn)
    if kind == "wav2vec2":
        from avface.audio.wav2vec2 import wav2vec2_features

        return wav2vec2_features(waveform, num_frames, fps, weights=config.wav2vec2_weights,
                                 layer=int(config.wav2vec2_layer), arch=config.wav2vec2_arch or None, window=window)
    if kind == "phones":
        from avface.audio.phones import phone_features

        return phone_features(waveform, num_frames, fps, window=window)
    if kind == "whisper":
        from avface.audio.whisper import whisper_features

        return whisper_features(waveform, num_frames, fps, window=window)
    raise _unknown(kind)


def check_available(config: AudioConfig) -> None:
    """Raise the clear error of ``config.kind`` now (missing model file or optional package) instead of once per
    clip."""
    kind = config.kind
    if kind == "mel":
        return
    if kind == "deepspeech":
        from avface.audio.deepspeech import resolve_graph_path

        resolve_graph_path(config.deepspeech_graph)
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            raise AudioFeatureError(
                "audio.kind=deepspeech runs DeepSpeech v0.1.0's TF1 frozen graph and needs `tensorflow` "
                "(pip install tensorflow; not a dependency of avface). Or use audio.kind=mel / wav2vec2 / phones."
            )
        return
    if kind == "wav2vec2":
        from avface.audio.wav2vec2 import resolve_weights

        resolve_weights(config.wav2vec2_weights)
        return
    if kind == "phones":
        from avface.audio.phones import _decoder

        _decoder()
        return
    if kind == "whisper":
        from avface.audio.whisper import check_whisper

        check_whisper()
        return
    raise _unknown(kind)

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
=============  ====  =====================================================================  =====================
"""

from __future__ import annotations

import numpy as np

from avface.audio.errors import AudioFeatureError, MissingModelError

FEATURE_KINDS = ("mel", "deepspeech", "wav2vec2", "phones")

__all__ = ["FEATURE_KINDS", "AudioFeatureError", "MissingModelError", "check_available", "extract_audio_features",
           "feature_dim"]


def feature_dim(kind: str, **cfg) -> int:
    """F of :func:`extract_audio_features` for ``kind`` (wav2vec2: the architecture's embedding size)."""
    if kind == "mel":
        return int(cfg.get("n_mels", 80))
    if kind == "deepspeech":
        return 29
    if kind == "wav2vec2":
        arch = cfg.get("wav2vec2_arch") or {}
        return int(arch.get("encoder_embed_dim", 768))
    if kind == "phones":
        from avface.audio.phones import PHONES

        return len(PHONES)
    raise AudioFeatureError(f"unknown audio feature kind {kind!r}; choose one of {FEATURE_KINDS}")


def extract_audio_features(waveform: np.ndarray, num_frames: int, fps: float = 25.0, kind: str = "mel",
                           **cfg) -> np.ndarray:
    """Audio features aligned to video frames.

    Args:
        waveform: ``(N,)`` float32 in [-1, 1], 16 kHz mono, starting with video frame 0.
        num_frames: number of video frames ``T``.
        fps: video frame rate.
        kind: ``mel`` | ``deepspeech`` | ``wav2vec2`` | ``phones``.
        **cfg: ``window`` (16); ``n_mels`` (mel); ``deepspeech_graph`` (path), ``logits_fn`` (deepspeech);
            ``wav2vec2_weights`` (path), ``wav2vec2_layer`` (-1), ``wav2vec2_arch`` (dict for
            ``torchaudio.models.wav2vec2_model``; empty = base). Unknown keys are ignored.
    Returns:
        ``(num_frames, window, F)`` float32.
    """
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    if not np.all(np.isfinite(waveform)):
        raise AudioFeatureError("waveform contains NaN or inf")
    window = int(cfg.get("window", 16))
    if kind == "mel":
        from avface.audio.mel import mel_features

        return mel_features(waveform, num_frames, fps, n_mels=int(cfg.get("n_mels", 80)), window=window)
    if kind == "deepspeech":
        from avface.audio.deepspeech import deepspeech_features

        return deepspeech_features(waveform, num_frames, fps, graph_path=cfg.get("deepspeech_graph"), window=window,
                                   logits_fn=cfg.get("logits_fn"))
    if kind == "wav2vec2":
        from avface.audio.wav2vec2 import wav2vec2_features

        return wav2vec2_features(waveform, num_frames, fps, weights=cfg.get("wav2vec2_weights"),
                                 layer=int(cfg.get("wav2vec2_layer", -1)), arch=cfg.get("wav2vec2_arch") or None,
                                 window=window)
    if kind == "phones":
        from avface.audio.phones import phone_features

        return phone_features(waveform, num_frames, fps, window=window)
    raise AudioFeatureError(f"unknown audio feature kind {kind!r}; choose one of {FEATURE_KINDS}")


def check_available(kind: str, **cfg) -> None:
    """Raise the clear error of ``kind`` now (missing model file or optional package) instead of once per clip."""
    if kind == "mel":
        return
    if kind == "deepspeech":
        from avface.audio.deepspeech import resolve_graph_path

        resolve_graph_path(cfg.get("deepspeech_graph"))
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            raise AudioFeatureError(
                "audio.kind=deepspeech runs DeepSpeech v0.1.0's TF1 frozen graph and needs `tensorflow` "
                "(pip install tensorflow; not a dependency of avface). Or use audio.kind=mel / wav2vec2 / phones."
            )
        return
    if kind == "wav2vec2":
        from avface.audio.wav2vec2 import resolve_weights

        resolve_weights(cfg.get("wav2vec2_weights"))
        return
    if kind == "phones":
        from avface.audio.phones import _decoder

        _decoder()
        return
    raise AudioFeatureError(f"unknown audio feature kind {kind!r}; choose one of {FEATURE_KINDS}")

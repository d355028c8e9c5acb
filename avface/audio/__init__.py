"""Audio features aligned to video frames: ``(num_frames, 16, F)`` windows per frame (see :mod:`.features`)."""

from avface.audio.config import AudioConfig, AudioKind
from avface.audio.features import (
    FEATURE_KINDS,
    AudioFeatureError,
    MissingModelError,
    extract_audio_features,
    feature_dim,
)

__all__ = ["FEATURE_KINDS", "AudioConfig", "AudioFeatureError", "AudioKind", "MissingModelError",
           "extract_audio_features", "feature_dim"]

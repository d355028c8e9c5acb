"""``wav2vec2``: torchaudio's wav2vec 2.0 architecture with user-provided weights.

The architecture is ``torchaudio.models.wav2vec2_base()`` (or ``wav2vec2_model(**arch)`` when ``arch`` is given);
the weights are a torchaudio state dict loaded with ``torch.load(weights_only=True)`` (no pickle code runs), e.g.
``torch.save(torchaudio.pipelines.WAV2VEC2_BASE.get_model().state_dict(), path)`` on a machine with internet.

The CNN front end makes one token every 20 ms (400-sample receptive field, 320-sample stride at 16 kHz: token k is
centred at ``(320 k + 200) / 16000`` s); the output of transformer layer ``layer`` (default the last) is
interpolated to 2 tokens per video frame (50 Hz at 25 fps, as FaceFormer) and cut into windows of 16 centred on
each frame (:func:`avface.audio.windows.frame_windows`, ``per_frame = 2``): ``(T, 16, 768)`` for the base model.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

from avface.audio.errors import AudioFeatureError, resolve_model_file
from avface.audio.windows import frame_windows

DEFAULT_WEIGHTS = "~/.cache/avface/wav2vec2/wav2vec2_base.pt"
HINT = (
    "Save a torchaudio wav2vec2_base state dict there, e.g. on a machine with internet: "
    "python -c \"import torch, torchaudio; torch.save(torchaudio.pipelines.WAV2VEC2_BASE.get_model().state_dict(), "
    "'wav2vec2_base.pt')\" and copy it to {path} (or set audio.wav2vec2_weights=/path/to/file.pt)."
)


def resolve_weights(path: str | os.PathLike | None) -> Path:
    return resolve_model_file(path, DEFAULT_WEIGHTS, "wav2vec2 weights", HINT)


@functools.lru_cache(maxsize=2)
def _load(path: str, arch_json: str) -> torch.nn.Module:
    import torchaudio

    arch = json.loads(arch_json)
    model = torchaudio.models.wav2vec2_model(**arch) if arch else torchaudio.models.wav2vec2_base()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise AudioFeatureError(f"{path} is not a state dict of this wav2vec2 architecture: {e}") from e
    return model.eval()


def wav2vec2_features(waveform: np.ndarray, num_frames: int, fps: float, weights: str | None = None,
                      layer: int = -1, arch: dict | None = None, window: int = 16, per_frame: int = 2) -> np.ndarray:
    """``(num_frames, window, D)`` wav2vec2 features aligned to the video frames."""
    model = _load(str(resolve_weights(weights)), json.dumps(arch or {}, sort_keys=True))
    x = torch.as_tensor(np.asarray(waveform, np.float32))[None]
    if x.shape[1] < 400:  # shorter than one receptive field: pad so there is one token
        x = torch.nn.functional.pad(x, (0, 400 - x.shape[1]))
    with torch.inference_mode():
        feats, _ = model.extract_features(x)
    tokens = feats[layer][0].float().numpy()  # (K, D)
    return frame_windows(tokens, 50.0, num_frames, fps, per_frame=per_frame, window=window,
                         input_offset=200.0 / 16000.0)

"""``deepspeech``: DeepSpeech v0.1.0 logits exactly as VOCA computes them.

Pipeline (VOCA ``utils/audio_handler.py`` + DeepSpeech v0.1.0 ``util/audio.py``):

1. 16 kHz audio as int16 values (our f32 in [-1, 1] times 32768, clipped).
2. MFCC as ``python_speech_features.mfcc(audio, samplerate=16000, numcep=26)``: pre-emphasis 0.97, 25 ms / 10 ms
   rectangular frames (the last frame zero-padded), 512-point power spectrum / 512, 26 triangular mel filters
   (0 - 8 kHz), log, orthonormal DCT-II, first 26 kept, sinusoidal lifter L = 22, coefficient 0 replaced by the
   log frame energy. Re-implemented here in numpy (same formulas) so the package is not needed.
3. Keep every second row (50 Hz), add 9 zero rows of context each side, stack ``2 * 9 + 1`` rows -> ``(N, 494)``,
   whiten with the global mean and std of that matrix.
4. The frozen TF1 graph ``output_graph.pb`` of DeepSpeech v0.1.0: ``input_node (1, N, 494)``, ``input_lengths``
   -> ``logits (N, 1, 29)``.
5. ``np.interp`` from 50 Hz to the video rate (one row per frame), zero-pad 8 rows each side, windows of 16,
   stride 1 (:func:`avface.audio.windows.frame_windows` with ``per_frame = 1``) -> ``(T, 16, 29)``.

VOCA takes ``round(audio_seconds * fps)`` rows in step 5; we take the number of video frames ``T`` (the same
number when audio and video have the same length).

The graph needs ``tensorflow`` (not a dependency of this project: install it yourself where you want this
feature). The graph file is not on PyPI: see :data:`DOWNLOAD_HINT`.
"""

from __future__ import annotations

import decimal
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avface.audio.errors import AudioFeatureError, resolve_model_file
from avface.audio.windows import frame_windows

NUM_CEP = 26
NUM_CONTEXT = 9
NUM_CLASSES = 29
DEFAULT_GRAPH = "~/.cache/avface/deepspeech-0.1.0/output_graph.pb"
DOWNLOAD_HINT = (
    "Download deepspeech-0.1.0-models.tar.gz from https://github.com/mozilla/DeepSpeech/releases/tag/v0.1.0, "
    "extract models/output_graph.pb and put it at {path} (or set audio.deepspeech_graph=/path/to/output_graph.pb)."
)


# ---------------------------------------------------------------- python_speech_features.mfcc, in numpy
def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=4)
def _filterbanks(nfilt: int, nfft: int, samplerate: int, lowfreq: float, highfreq: float) -> np.ndarray:
    melpoints = np.linspace(_hz2mel(lowfreq), _hz2mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(melpoints) / samplerate)
    fbank = np.zeros([nfilt, nfft // 2 + 1])
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fbank


def _framesig(sig: np.ndarray, frame_len: float, frame_step: float) -> np.ndarray:
    slen = len(sig)
    frame_len = _round_half_up(frame_len)
    frame_step = _round_half_up(frame_step)
    numframes = 1 if slen <= frame_len else 1 + int(math.ceil((1.0 * slen - frame_len) / frame_step))
    padlen = int((numframes - 1) * frame_step + frame_len)
    padsignal = np.concatenate((sig, np.zeros((padlen - slen,))))
    indices = np.arange(frame_len)[None, :] + np.arange(0, numframes * frame_step, frame_step)[:, None]
    return padsignal[indices.astype(np.int64)]


def psf_mfcc(signal: np.ndarray, samplerate: int = 16000, winlen: float = 0.025, winstep: float = 0.01,
             numcep: int = 13, nfilt: int = 26, nfft: int = 512, lowfreq: float = 0, highfreq: float | None = None,
             preemph: float = 0.97, ceplifter: int = 22, append_energy: bool = True) -> np.ndarray:
    """``python_speech_features.mfcc`` (0.6) with its defaults: ``(frames, numcep)`` float64."""
    from scipy.fft import dct

    signal = np.asarray(signal, np.float64)
    highfreq = highfreq or samplerate / 2
    signal = np.append(signal[0], signal[1:] - preemph * signal[:-1]) if len(signal) else np.zeros(1)
    frames = _framesig(signal, winlen * samplerate, winstep * samplerate)
    pspec = 1.0 / nfft * np.square(np.absolute(np.fft.rfft(frames, nfft)))
    energy = np.sum(pspec, 1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = pspec @ _filterbanks(nfilt, nfft, samplerate, lowfreq, highfreq).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        n = np.arange(feat.shape[1])
        feat = (1 + (ceplifter / 2.0) * np.sin(np.pi * n / ceplifter)) * feat
    if append_energy:
        feat[:, 0] = np.log(energy)
    return feat


def audio_to_input_vector(audio_int16: np.ndarray, fs: int = 16000, numcep: int = NUM_CEP,
                          numcontext: int = NUM_CONTEXT) -> np.ndarray:
    """DeepSpeech v0.1.0 ``audioToInputVector``: ``(N, (2 * numcontext + 1) * numcep)`` whitened MFCC stacks."""
    features = psf_mfcc(audio_int16, samplerate=fs, numcep=numcep)[::2]
    num_strides = len(features)
    empty = np.zeros((numcontext, numcep), dtype=features.dtype)
    features = np.concatenate((empty, features, empty))
    window = 2 * numcontext + 1
    idx = np.arange(num_strides)[:, None] + np.arange(window)[None, :]
    inputs = features[idx].reshape(num_strides, -1)
    std = np.std(inputs)
    return (inputs - np.mean(inputs)) / (std if std > 0 else 1.0)


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """f32 in [-1, 1] -> int16 values (VOCA feeds ``audio.astype('int16')`` of 16-bit PCM)."""
    return np.clip(np.round(np.asarray(waveform, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------- the frozen graph
def resolve_graph_path(path: str | os.PathLike | None) -> Path:
    return resolve_model_file(path, DEFAULT_GRAPH, "DeepSpeech v0.1.0 graph", DOWNLOAD_HINT)


@functools.lru_cache(maxsize=2)
def _load_graph(path: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import tensorflow as tf  # type: ignore[import-not-found]
    except ImportError as e:  # pragma: no cover - tensorflow is not installed in CI
        raise AudioFeatureError(
            "audio.kind=deepspeech runs DeepSpeech v0.1.0's TF1 frozen graph and needs `tensorflow` "
            "(pip install tensorflow; not a dependency of avface). Or use audio.kind=mel / wav2vec2 / phones."
        ) from e
    tf1 = tf.compat.v1
    graph = tf1.Graph()
    with graph.as_default():
        graph_def = tf1.GraphDef()
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
        tf1.import_graph_def(graph_def, name="deepspeech")
    sess = tf1.Session(graph=graph)
    input_tensor = graph.get_tensor_by_name("deepspeech/input_node:0")
    seq_length = graph.get_tensor_by_name("deepspeech/input_lengths:0")
    logits = graph.get_tensor_by_name("deepspeech/logits:0")

    def run(inputs: np.ndarray) -> np.ndarray:  # pragma: no cover - needs tensorflow
        out = sess.run(logits, feed_dict={input_tensor: inputs[np.newaxis, ...], seq_length: [inputs.shape[0]]})
        return np.asarray(out)[:, 0]

    return run


def deepspeech_features(waveform: np.ndarray, num_frames: int, fps: float, graph_path: str | None = None,
                        window: int = 16, logits_fn: Callable[[np.ndarray], np.ndarray] | None = None
                        ) -> np.ndarray:
    """``(num_frames, window, 29)`` VOCA DeepSpeech windows.

    ``logits_fn`` replaces the TF graph (``(N, 494) -> (N, 29)``), for tests or another runtime of the same graph.
    """
    if logits_fn is None:
        logits_fn = _load_graph(str(resolve_graph_path(graph_path)))
    inputs = audio_to_input_vector(to_int16(waveform), 16000)
    logits = np.asarray(logits_fn(inputs), np.float32)
    if logits.ndim != 2 or logits.shape[0] != inputs.shape[0]:
        raise AudioFeatureError(f"DeepSpeech logits must be ({inputs.shape[0]}, C), got {logits.shape}")
    return frame_windows(logits, 50.0, num_frames, fps, per_frame=1, window=window)

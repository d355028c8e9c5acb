"""Phonemes -> mouth articulation curves: a viseme table plus Cohen-Massaro co-articulation.

Each espeak phoneme mnemonic maps to a phoneme class and to articulatory targets on four channels,
``ARTICULATORS = (jaw_open, lip_round, lip_spread, lip_press)``, each in [0, 1], with a per-channel dominance
(how strongly the phoneme imposes its target on that channel). Following Cohen & Massaro (1993), a segment's
dominance decays exponentially with the time distance to the segment (anticipatory decay slower than
carry-over), and the curve at time t is the dominance-weighted mean of all targets:

    D_s(t) = alpha_s * exp(-(d_s(t) / tau)^c),   d_s(t) = distance from t to [start_s, end_s] (0 inside)
    y(t)   = sum_s D_s(t) T_s / sum_s D_s(t)

Bilabials (p b m) dominate jaw and lip closure (so the lips really close, even in fast speech), velars and /h/
barely constrain the lips (they take them from their neighbours), vowels dominate the jaw moderately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from avface.speech.espeak import Phoneme

__all__ = [
    "ARTICULATORS",
    "PHONEME_CLASSES",
    "VisemeTarget",
    "phoneme_class",
    "viseme_target",
    "articulation_curves",
    "phoneme_classes_at",
]

ARTICULATORS = ("jaw_open", "lip_round", "lip_spread", "lip_press")
PHONEME_CLASSES = (
    "silence", "open_vowel", "mid_vowel", "close_vowel", "rounded_vowel", "bilabial", "labiodental", "dental",
    "alveolar", "postalveolar", "rhotic", "velar_glottal", "approximant",
)


@dataclass(frozen=True)
class VisemeTarget:
    """Targets (jaw_open, lip_round, lip_spread, lip_press) in [0, 1] and per-channel dominance weights."""

    target: tuple[float, float, float, float]
    dominance: tuple[float, float, float, float]


# class -> (targets, dominance). Dominance ~1 is "normal"; bilabial jaw/press 6 forces the closure.
_CLASS_TABLE: dict[str, VisemeTarget] = {
    "silence": VisemeTarget((0.03, 0.0, 0.1, 0.25), (0.6, 0.4, 0.4, 0.5)),
    "open_vowel": VisemeTarget((0.95, 0.0, 0.3, 0.0), (2.0, 0.8, 0.8, 1.0)),
    "mid_vowel": VisemeTarget((0.6, 0.05, 0.3, 0.0), (1.5, 0.6, 0.6, 1.0)),
    "close_vowel": VisemeTarget((0.3, 0.0, 0.9, 0.0), (1.2, 1.0, 1.5, 1.0)),
    "rounded_vowel": VisemeTarget((0.45, 0.9, 0.0, 0.0), (1.3, 1.8, 1.5, 1.0)),
    "bilabial": VisemeTarget((0.0, 0.1, 0.1, 1.0), (6.0, 0.8, 1.5, 6.0)),
    "labiodental": VisemeTarget((0.12, 0.0, 0.25, 0.55), (3.0, 0.8, 1.0, 3.0)),
    "dental": VisemeTarget((0.28, 0.0, 0.35, 0.0), (1.5, 0.5, 0.8, 1.0)),
    "alveolar": VisemeTarget((0.18, 0.0, 0.35, 0.0), (1.2, 0.3, 0.6, 0.8)),
    "postalveolar": VisemeTarget((0.18, 0.7, 0.0, 0.0), (1.2, 2.0, 1.5, 0.8)),
    "rhotic": VisemeTarget((0.25, 0.5, 0.0, 0.0), (0.8, 1.2, 0.8, 0.6)),
    "velar_glottal": VisemeTarget((0.3, 0.0, 0.2, 0.0), (0.6, 0.2, 0.2, 0.4)),
    "approximant": VisemeTarget((0.25, 0.1, 0.4, 0.0), (0.8, 0.6, 0.8, 0.6)),
}

_CLASS_OF: dict[str, str] = {}
for _cls, _syms in {
    "silence": "_ _: _! _^ || | ; % ' ,",
    "open_vowel": "a aa a# A: A@ aI aU aI@ aI3 aU@ a2 A",
    "mid_vowel": "E E2 E# e e@ eI V 3 3: @ @2 @5 @# 0 0# O2",
    "close_vowel": "i i: I I2 I# i@ i@3 IR y",
    "rounded_vowel": "u: U U@ oU o@ O: O@ O OI u o oU# 02 w",
    "bilabial": "p b m m- p2",
    "labiodental": "f v",
    "dental": "T D",
    "alveolar": "t d n s z l @L t# t2 d# n- l/ l# s# z# t- d2 n2 ts dz",
    "postalveolar": "S Z tS dZ tS; dZ;",
    "rhotic": "r r- * R r/ 3:r",
    "velar_glottal": "k g N h ? x k- g- N2 c J",
    "approximant": "j j/ l^ n^",
}.items():
    for _s in _syms.split():
        _CLASS_OF[_s] = _cls


def phoneme_class(symbol: str) -> str:
    """Class of an espeak ASCII phoneme mnemonic (see :data:`PHONEME_CLASSES`); unknown symbols are classified
    from their first character (vowel letters -> mid vowel, else alveolar)."""
    if symbol in _CLASS_OF:
        return _CLASS_OF[symbol]
    base = re.sub(r"[0-9#;:/\-^]+$", "", symbol)
    if base in _CLASS_OF:
        return _CLASS_OF[base]
    if symbol.startswith("_") or not symbol:
        return "silence"
    if symbol[0] in "aAeEiIoOuU@3V0":
        return "mid_vowel"
    return "alveolar"


def viseme_target(symbol: str) -> VisemeTarget:
    return _CLASS_TABLE[phoneme_class(symbol)]


def articulation_curves(
    phonemes: list[Phoneme],
    times: np.ndarray,
    tau_anticipation: float = 0.040,
    tau_carryover: float = 0.030,
    exponent: float = 2.0,
    smooth_sigma: float = 0.012,
    strength: float = 1.0,
) -> np.ndarray:
    """Articulation at ``times`` (T,) seconds -> (T, 4) float32 over :data:`ARTICULATORS`.

    ``tau_*`` are the dominance decay times before a segment (anticipation) and after it (carry-over);
    ``smooth_sigma`` (s) is a final Gaussian smoothing (muscle inertia) applied on a 1 kHz grid before sampling;
    ``strength`` scales the deviation from the rest pose (speaker articulation style).
    """
    times = np.asarray(times, dtype=np.float64)
    if len(phonemes) == 0:
        rest = np.array(_CLASS_TABLE["silence"].target, np.float32)
        return np.tile(rest, (len(times), 1))
    step = 0.001
    t_end = max(float(times.max(initial=0.0)), phonemes[-1].end) + 4 * smooth_sigma + step
    t_start = min(float(times.min(initial=0.0)), phonemes[0].start) - 4 * smooth_sigma
    grid = np.arange(t_start, t_end, step)
    # Outside the utterance the mouth is at rest: silence segments cover the whole time range (dominance is
    # relative, so without them the first/last phoneme would rule arbitrarily far away).
    phonemes = ([Phoneme("_", t_start - 1.0, phonemes[0].start)] + list(phonemes)
                + [Phoneme("_", phonemes[-1].end, t_end + 1.0)])
    starts = np.array([p.start for p in phonemes])
    ends = np.array([max(p.end, p.start + 1e-3) for p in phonemes])
    targets = np.array([viseme_target(p.symbol).target for p in phonemes])  # (S, 4)
    alphas = np.array([viseme_target(p.symbol).dominance for p in phonemes])  # (S, 4)
    before = np.clip(starts[None, :] - grid[:, None], 0, None)  # (G, S) time until the segment starts
    after = np.clip(grid[:, None] - ends[None, :], 0, None)
    decay = np.exp(-((before / tau_anticipation) ** exponent) - (after / tau_carryover) ** exponent)  # (G, S)
    dom = decay[:, :, None] * alphas[None]  # (G, S, 4)
    rest_dom = 1e-9  # a faint rest target everywhere keeps the ratio defined where every dominance underflows
    rest_t = np.array(_CLASS_TABLE["silence"].target)
    curve = ((dom * targets[None]).sum(1) + rest_dom * rest_t) / (dom.sum(1) + rest_dom)  # (G, 4)
    if smooth_sigma > 0:
        from scipy.ndimage import gaussian_filter1d

        curve = gaussian_filter1d(curve, smooth_sigma / step, axis=0, mode="nearest")
    rest = np.array(_CLASS_TABLE["silence"].target)
    curve = rest + strength * (curve - rest)
    out = np.stack([np.interp(times, grid, curve[:, k]) for k in range(4)], axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def phoneme_classes_at(phonemes: list[Phoneme], times: np.ndarray) -> list[str]:
    """The class of the phoneme sounding at each time (``silence`` outside all segments)."""
    out = []
    for t in np.asarray(times, dtype=np.float64):
        cls = "silence"
        for p in phonemes:
            if p.start <= t < p.end:
                cls = phoneme_class(p.symbol)
                break
        out.append(cls)
    return out

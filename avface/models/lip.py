"""Lip refinement (sec. 3.2): a SIREN MLP with FiLM layers conditioned on the audio window.

Following the geometry network of NHA (itself pi-GAN's FiLM-SIREN): a mapping network turns the audio
embedding into a per-layer frequency and phase shift; each hidden layer computes
``sin(freq * (W x + b) + phase)``; the last linear layer outputs a 3D offset per lip vertex.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avface.models.config import LipRefinerConfig
from avface.models.encoders import AudioEncoder


class FiLMSiren(nn.Module):
    """Linear layer followed by a FiLM-modulated sine: sin(freq * (W x + b) + phase); SIREN init."""

    def __init__(self, in_dim: int, out_dim: int, first: bool = False, omega: float = 30.0):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / omega
            self.linear.weight.uniform_(-bound, bound)
            self.linear.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return torch.sin(freq * self.linear(x) + phase)


class MappingNetwork(nn.Module):
    """Condition (N, C) -> per-layer frequencies and phases, each (N, L, H). pi-GAN: LeakyReLU MLP, last layer
    scaled down by 0.25 so the initial frequencies are close to ``omega``."""

    def __init__(self, in_dim: int, hidden: int, n_layers: int, film_layers: int, film_dim: int, omega: float):
        super().__init__()
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(n_layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2, True)]
            d = hidden
        self.net = nn.Sequential(*mods)
        self.out = nn.Linear(d, 2 * film_layers * film_dim)
        with torch.no_grad():
            nn.init.kaiming_normal_(self.out.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            self.out.weight.mul_(0.25)
            self.out.bias.zero_()
        self.film_layers, self.film_dim, self.omega = film_layers, film_dim, omega

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.out(self.net(cond)).reshape(-1, 2, self.film_layers, self.film_dim)
        # pi-GAN: freq = 15 * f + 30 (omega); phase unscaled
        freq = y[:, 0] * (self.omega / 2.0) + self.omega
        return freq, y[:, 1]


class LipRefiner(nn.Module):
    """Audio-conditioned lip offsets.

    ``forward(lip_vertices (B,T,K,3) canonical coarse positions, audio (B,T,16,F), audio_valid (B,T) | None)``
    -> offsets (B,T,K,3) in metres. K = number of lip vertices (``FaceModelData.regions["lips"]``).
    With ``zero_without_audio``, frames whose audio is missing get zero offsets (the paper: "for frames without
    audio the lip shape is deduced based on video only").
    """

    def __init__(self, cfg: LipRefinerConfig, n_lip_vertices: int, audio_dim: int, audio_window: int = 16,
                 audio_mean: list[float] | None = None, audio_std: list[float] | None = None):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(audio_dim, audio_window, cfg.audio, audio_mean, audio_std)
        self.vertex_feature = nn.Parameter(torch.randn(n_lip_vertices, cfg.vertex_feature) * 0.1) \
            if cfg.vertex_feature > 0 else None
        in_dim = 3 + max(cfg.vertex_feature, 0)
        self.layers = nn.ModuleList(
            [FiLMSiren(in_dim if i == 0 else cfg.hidden, cfg.hidden, first=i == 0, omega=cfg.first_omega)
             for i in range(cfg.layers)])
        self.mapping = MappingNetwork(cfg.audio.embed, cfg.mapping_hidden, cfg.mapping_layers, cfg.layers,
                                      cfg.hidden, cfg.first_omega)
        self.final = nn.Linear(cfg.hidden, 3)
        with torch.no_grad():
            # near zero (not zero: every parameter gets gradient at step 0): the lip stage starts from the coarse
            # lips instead of random offsets (which raised the held-out lip error by 0.04 mm before any training)
            bound = 1e-2 * math.sqrt(6.0 / cfg.hidden) / cfg.first_omega
            self.final.weight.uniform_(-bound, bound)
            self.final.bias.zero_()
        self.n_lip_vertices = n_lip_vertices

    def forward(self, lip_vertices: torch.Tensor, audio: torch.Tensor | None,
                audio_valid: torch.Tensor | None = None) -> torch.Tensor:
        b, t, k, _ = lip_vertices.shape
        if audio is None:
            return torch.zeros_like(lip_vertices)
        centre = lip_vertices.mean(dim=2, keepdim=True)
        x = ((lip_vertices - centre) / self.cfg.position_scale).reshape(b * t, k, 3)
        if self.vertex_feature is not None:
            x = torch.cat([x, self.vertex_feature[None].expand(b * t, -1, -1)], dim=-1)
        cond = self.audio_encoder(audio.reshape(b * t, *audio.shape[2:]))
        freq, phase = self.mapping(cond)  # (BT, L, H)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h, freq[:, i, None, :], phase[:, i, None, :])
        off = (self.final(h) * self.cfg.offset_scale).reshape(b, t, k, 3)
        if self.cfg.zero_without_audio and audio_valid is not None:
            off = off * audio_valid.to(off)[..., None, None]
        return off

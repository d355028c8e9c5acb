"""Fine stage (sec. 3.3): UNet-ResNet (the normals network of Abrevaya et al. 2020) predicting a 1-channel UV
displacement D, with the audio window injected as an extra channel after the encoder's third stage; and the
geometry that turns D into detailed positions and normals in UV space (V_d = V_c + D * N_c, eq. 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avface.models.blocks import ResNet
from avface.models.config import DetailConfig


def convrelu(c_in: int, c_out: int, kernel: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.ReLU(inplace=True))


class DetailUNet(nn.Module):
    """UNet-ResNet: ``forward(x (N,C,S,S), audio (N,16,F) | None) -> D (N,1,S,S)``, S divisible by 32.

    Module names follow Abrevaya et al.'s ``ResNetUNet`` image branch (``layerK_1x1``, ``conv_upK``,
    ``conv_original_sizeK``, ``conv_last``) so their checkpoint maps onto it; their skip connections merge by
    element-wise max into part of the decoder channels. Channel counts are derived from the backbone, giving
    exactly their network for ResNet-18 widths. The audio window is mapped by a linear layer to one
    (S/16 x S/16) channel appended to the output of encoder stage ``audio_layer``; every layer that reads that
    output gets one more input channel. D = tanh(raw) * ``displacement_scale`` (DECA's detail decoder: max 0.01).
    """

    def __init__(self, cfg: DetailConfig, audio_dim: int, audio_window: int = 16):
        super().__init__()
        self.cfg = cfg
        la = cfg.audio_layer if cfg.use_audio else None
        if la is not None and la not in (1, 2, 3, 4):
            raise ValueError("audio_layer must be 1..4")
        extra = {la + 1: 1} if la is not None and la < 4 else {}
        self.encoder = ResNet(cfg.backbone, in_channels=cfg.in_channels, extra_in=extra)
        c0, c1, c2, c3, c4 = self.encoder.channels
        ea = [1 if la == i else 0 for i in range(5)]  # extra input channel for the 1x1 lateral of stage i
        self.layer0_1x1 = convrelu(c0, c0, 1, 0)
        self.layer1_1x1 = convrelu(c1 + ea[1], c1, 1, 0)
        self.layer2_1x1 = convrelu(c2 + ea[2], c2, 1, 0)
        self.layer3_1x1 = convrelu(c3 + ea[3], c3, 1, 0)
        self.layer4_1x1 = convrelu(c4 + ea[4], c3 + c4, 1, 0)
        self.conv_up3 = convrelu(c3 + c4, c2 + c4, 3, 1)
        self.conv_up2 = convrelu(c2 + c4, c1 + c3, 3, 1)
        self.conv_up1 = convrelu(c1 + c3, c0 + c3, 3, 1)
        self.conv_up0 = convrelu(c0 + c3, c0 + c2, 3, 1)
        self.conv_original_size0 = convrelu(cfg.in_channels, c0, 3, 1)
        self.conv_original_size1 = convrelu(c0, c0, 3, 1)
        self.conv_original_size2 = convrelu(c0 + c2, c0, 3, 1)
        self.conv_last = nn.Conv2d(c0, 1, 1)
        self.keep = (c4, c4, c3, c3, c2)
        self.audio_layer = la
        if la is not None:
            side = cfg.uv_size // (2 ** (la + 1))
            self.audio_fc = nn.Linear(audio_window * audio_dim, side * side)
            self.audio_side = side

    @staticmethod
    def _merge(x: torch.Tensor, skip: torch.Tensor, keep: int) -> torch.Tensor:
        return torch.cat([x[:, :keep], torch.maximum(x[:, keep:], skip)], dim=1)

    def _inject(self, feat: torch.Tensor, stage: int, audio: torch.Tensor | None) -> torch.Tensor:
        if self.audio_layer != stage:
            return feat
        n, _, h, w = feat.shape
        if audio is None:
            a = feat.new_zeros(n, 1, h, w)
        else:
            a = self.audio_fc(audio.reshape(n, -1)).reshape(n, 1, self.audio_side, self.audio_side)
            if a.shape[-2:] != (h, w):
                a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([feat, a], dim=1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        enc = self.encoder
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
        x_orig = self.conv_original_size1(self.conv_original_size0(x))
        l0 = enc.stem(x)
        l1 = self._inject(enc.layer1(enc.maxpool(l0)), 1, audio)
        l2 = self._inject(enc.layer2(l1), 2, audio)
        l3 = self._inject(enc.layer3(l2), 3, audio)
        l4 = self._inject(enc.layer4(l3), 4, audio)
        k = self.keep
        y = self._merge(up(self.layer4_1x1(l4)), self.layer3_1x1(l3), k[0])
        y = self._merge(up(self.conv_up3(y)), self.layer2_1x1(l2), k[1])
        y = self._merge(up(self.conv_up2(y)), self.layer1_1x1(l1), k[2])
        y = self._merge(up(self.conv_up1(y)), self.layer0_1x1(l0), k[3])
        y = self._merge(up(self.conv_up0(y)), x_orig, k[4])
        y = self.conv_original_size2(y)
        return torch.tanh(self.conv_last(y)) * self.cfg.displacement_scale


def _uv_derivatives(p: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Derivatives of a (N,3,H,W) map along W (u) and H (v), replicate-padded.

    Central differences; with ``mask`` (N,1,H,W) a neighbour outside the mask (no surface there, position 0) is
    not used: one-sided differences at a chart's border, 0 where neither neighbour is inside.
    """
    pp = F.pad(p, (1, 1, 1, 1), mode="replicate")
    if mask is None:
        du = (pp[..., 1:-1, 2:] - pp[..., 1:-1, :-2]) * 0.5
        dv = (pp[..., 2:, 1:-1] - pp[..., :-2, 1:-1]) * 0.5
        return du, dv
    mp = F.pad((mask > 0.5).to(p), (1, 1, 1, 1), mode="replicate")

    def one_axis(nxt: torch.Tensor, prv: torch.Tensor, m_nxt: torch.Tensor, m_prv: torch.Tensor) -> torch.Tensor:
        return ((nxt - p) * m_nxt + (p - prv) * m_prv) / (m_nxt + m_prv).clamp_min(1.0)

    du = one_axis(pp[..., 1:-1, 2:], pp[..., 1:-1, :-2], mp[..., 1:-1, 2:], mp[..., 1:-1, :-2])
    dv = one_axis(pp[..., 2:, 1:-1], pp[..., :-2, 1:-1], mp[..., 2:, 1:-1], mp[..., :-2, 1:-1])
    return du, dv


def position_map_normals(position: torch.Tensor, reference: torch.Tensor | None = None,
                         eps: float = 1e-12, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Unit normals (N,3,H,W) of a UV position map by finite differences, cross(d/du, d/dv).

    The UV layout's handedness is not known here, so each normal is flipped to agree with ``reference`` (the
    coarse normal map) when given. ``mask`` (N,1,H,W): texels with a surface; differences never reach outside
    it, and where they vanish (isolated texels) the normal is ``reference`` (0 without one).
    """
    du, dv = _uv_derivatives(position, mask)
    n = torch.cross(du, dv, dim=1)
    norm = n.norm(dim=1, keepdim=True)
    n = n / norm.clamp_min(eps)
    if reference is not None:
        sign = torch.where((n * reference).sum(1, keepdim=True) < 0, -1.0, 1.0)
        n = n * sign
        if mask is not None:
            n = torch.where(norm > eps, n, reference)
    return n


def displacement_to_detail(uv_position: torch.Tensor, uv_normal: torch.Tensor, displacement: torch.Tensor,
                           mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2): V_d = V_c + D * N_c in UV space; returns (V_d (N,3,U,U), detailed normals (N,3,U,U)).

    Detailed normals come from finite differences of V_d within ``mask`` (N,1,U,U) (one-sided at the UV charts'
    borders); outside it they fall back to N_c.
    """
    v_d = uv_position + displacement * uv_normal
    n_d = position_map_normals(v_d, reference=uv_normal, mask=mask)
    if mask is not None:
        n_d = torch.where(mask > 0.5, n_d, uv_normal)
    return v_d, n_d

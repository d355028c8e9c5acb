"""Building blocks: a width-configurable ResNet (torchvision key layout), the temporal transformer, MLP heads."""

from __future__ import annotations

import math

import torch
from torch import nn

from avface.models.config import BackboneConfig, HeadConfig, TransformerConfig


class FeatureStandardizer(nn.Module):
    """``x (..., F) -> (x - mean) / std``; the identity without statistics. ``mean``/``std`` (F,) are config values
    (saved with the model's config), so they are non-persistent buffers: not in the state dict, moved by ``.to``."""

    def __init__(self, dim: int, mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.enabled = mean is not None or std is not None
        if not self.enabled:
            return
        if mean is None or std is None or len(mean) != dim or len(std) != dim:
            raise ValueError(f"feature statistics need a mean and a std of {dim} values each, got "
                             f"{None if mean is None else len(mean)} and {None if std is None else len(std)}")
        if min(std) <= 0:
            raise ValueError(f"feature std must be positive, got min {min(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (torchvision v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """ResNet feature extractor without the fc layer; parameter names match torchvision (``conv1``, ``bn1``,
    ``layer1..4``), hence DECA's encoder and Abrevaya et al.'s base model too.

    ``extra_in`` maps a stage index (1..4) to extra input channels appended to that stage's input (the fine stage
    appends an audio channel to the output of stage 3). ``forward`` -> (B, out_channels) pooled features;
    ``features(x)`` -> list of the stem and stage outputs.
    """

    def __init__(self, cfg: BackboneConfig, in_channels: int = 3, extra_in: dict[int, int] | None = None):
        super().__init__()
        extra_in = extra_in or {}
        block = Bottleneck if cfg.block == "bottleneck" else BasicBlock
        self.cfg = cfg
        self.conv1 = nn.Conv2d(in_channels, cfg.stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = cfg.stem
        self.channels = [cfg.stem]
        for i, (n, w) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            stride = 1 if i == 0 else 2
            inplanes += extra_in.get(i + 1, 0)
            down = None
            if stride != 1 or inplanes != w * block.expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, w * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(w * block.expansion))
            blocks = [block(inplanes, w, stride, down)]
            inplanes = w * block.expansion
            blocks += [block(inplanes, w) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.channels.append(inplanes)
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers with ReLU in between: sizes [in, h1, ..., out]."""
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or final_activation:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


def projection_head(in_dim: int, out_dim: int, cfg: HeadConfig) -> nn.Sequential:
    """The paper's "3 feed-forward layers with ReLU activations for projection" (len(hidden) + 1 layers)."""
    return mlp([in_dim, *cfg.hidden, out_dim])


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sinusoidal positional encodings (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    div = torch.exp(-math.log(10000.0) * i / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class TemporalTransformer(nn.Module):
    """Transformer encoder over the T frames of a window: (B, T, in_dim) -> (B, T, d_model).

    Post-norm encoder layers (LayerNorm), ReLU feed-forward, dropout from the config (0 in the paper).
    ``key_padding_mask`` (B, T) True marks frames to ignore (padding); occluded frames are not masked, the paper
    relies on attention to the neighbouring frames.
    """

    def __init__(self, in_dim: int, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model or in_dim
        if d % cfg.heads:
            raise ValueError(f"transformer width {d} not divisible by {cfg.heads} heads; set d_model")
        self.inp = nn.Identity() if d == in_dim else nn.Linear(in_dim, d)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out_dim = d
        self.positional = cfg.positional
        self.register_buffer("pe", sinusoidal_positions(cfg.max_len, d), persistent=False)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inp(x)
        if self.positional:
            x = x + self.pe[: x.shape[1]].to(x.dtype)
        return self.encoder(x, src_key_padding_mask=key_padding_mask)

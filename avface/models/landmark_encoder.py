"""The landmark encoder: the geometry channel of E_c and E_v (``AVFaceConfig.landmark_input``).

Per frame, the detector's points (``Batch.points (B,T,P,3)``: x, y pixels of the crop, z relative depth in the same
units) are normalised by the crop, ``x_ndc = 2 x / S - 1`` (likewise y) and ``z / (S / 2)``, flattened and mapped by
an MLP to ``embed - 1`` features; the last channel is the validity flag. A frame without a detection (or whose
points training drops, ``p_drop``) gets the zero embedding with flag 0, like a dropped modality.
"""

from __future__ import annotations

import torch
from torch import nn

from avface.models.blocks import mlp
from avface.models.config import LandmarkEncoderConfig


def normalise_points(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(..., P, 3)`` crop pixels (x, y) and depth (z, same units) -> x, y in [-1, 1] over the crop, z / (S / 2)."""
    half = image_size / 2.0
    return torch.cat([points[..., :2] / half - 1.0, points[..., 2:] / half], -1)


class LandmarkEncoder(nn.Module):
    """``(points (B,T,P,3) crop px, valid (B,T) bool, image_size) -> (B,T,embed)`` (last channel: the flag)."""

    def __init__(self, cfg: LandmarkEncoderConfig):
        super().__init__()
        if cfg.embed < 2:
            raise ValueError(f"landmark encoder embed must be >= 2 (features + the validity flag), got {cfg.embed}")
        self.cfg = cfg
        self.mlp = mlp([cfg.n_points * 3, *cfg.hidden, cfg.embed - 1])
        self.out_dim = cfg.embed

    def keep_mask(self, valid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,T) float: 1 where the frame's points are used: detected, and (training) not dropped."""
        keep = valid.to(torch.float32)
        if self.training and self.cfg.p_drop > 0:
            b, t = valid.shape
            n = t if self.cfg.dropout_per == "frame" else 1
            u = torch.rand(b, n, generator=generator, device="cpu" if generator is None else generator.device)
            keep = keep * (u.to(valid.device) >= self.cfg.p_drop).float().expand(b, t)
        return keep

    def forward(self, points: torch.Tensor | None, valid: torch.Tensor | None, image_size: int,
                shape: tuple[int, int] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``points=None`` (no detector points): the zero embedding of ``shape`` (B, T) frames, flag 0."""
        if points is None:
            if shape is None:
                raise ValueError("LandmarkEncoder: give points or the (B, T) shape of the zero embedding")
            dev = next(self.parameters()).device
            return torch.zeros(*shape, self.out_dim, device=dev)
        b, t, p, _ = points.shape
        if p != self.cfg.n_points:
            raise ValueError(f"the landmark encoder takes {self.cfg.n_points} points ({self.cfg.point_set}), got {p}")
        if valid is None:
            valid = torch.ones(b, t, dtype=torch.bool, device=points.device)
        keep = self.keep_mask(valid, generator)
        x = normalise_points(points, image_size).reshape(b, t, p * 3) * keep[..., None]
        return torch.cat([self.mlp(x) * keep[..., None], keep[..., None]], -1)

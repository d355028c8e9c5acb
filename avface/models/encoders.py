"""Encoders of the coarse stage: E_c (coarse code) and the expression-jaw branch (E_a, E_v, transformer)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avface.models.blocks import FeatureStandardizer, ResNet, TemporalTransformer, mlp, projection_head
from avface.models.config import (
    AudioEncoderConfig,
    CoarseConfig,
    ExpressionJawConfig,
    LandmarkEncoderConfig,
)
from avface.models.landmark_encoder import LandmarkEncoder


def _flatten_frames(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    b, t = x.shape[:2]
    return x.reshape(b * t, *x.shape[2:]), b, t


@dataclass
class CoarseCode:
    """Per-frame coarse code c split into its parts; every tensor (B, T, ...)."""

    shape: torch.Tensor  # (B,T,100)
    albedo: torch.Tensor  # (B,T,50)
    light: torch.Tensor  # (B,T,9,3) SH coefficients
    global_pose: torch.Tensor  # (B,T,3) axis-angle
    cam: torch.Tensor  # (B,T,3) orthographic (s, tx, ty)
    raw: torch.Tensor  # (B,T,183)


class CoarseEncoder(nn.Module):
    """E_c: images (B,T,3,H,W) -> ResNet -> DECA-style head (2048 -> 1024 -> 183) per frame -> temporal
    transformer -> 3 FF layers -> c (B,T,183) = shape | albedo | light | global pose | camera.

    ``cfg.residual``: c = embedding + head(transformer(embedding)) with the head's last layer initialised near zero, so
    the model starts close to the per-frame (DECA-initialised) estimate; the paper does not specify this. A bias sets
    the initial camera scale to ``cfg.init_cam_scale`` (set from the data) so an untrained model sees the mean face
    frontally at about the right size.

    ``landmarks`` (the landmark input, :mod:`avface.models.landmark_encoder`): the per-frame landmark embedding,
    projected to 183, is added to the image embedding before the transformer (a near-zero start).
    """

    def __init__(self, cfg: CoarseConfig, landmarks: LandmarkEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.landmarks = None if landmarks is None else LandmarkEncoder(landmarks)
        if self.landmarks is not None:
            self.landmark_proj = nn.Linear(self.landmarks.out_dim, cfg.code_dim)
            nn.init.normal_(self.landmark_proj.weight, std=1e-3)
            nn.init.zeros_(self.landmark_proj.bias)
        self.backbone = ResNet(cfg.backbone)
        d = cfg.code_dim
        self.layers = mlp([self.backbone.out_channels, cfg.embed_hidden, d])  # DECA's E_flame.layers.{0,2}
        self.temporal = cfg.temporal
        if cfg.temporal:
            self.transformer = TemporalTransformer(d, cfg.transformer)
            self.head = projection_head(self.transformer.out_dim, d, cfg.head)
        else:
            self.head = projection_head(d, d, cfg.head)
        last = self.head[-1]
        nn.init.normal_(last.weight, std=1e-3)  # near zero (not zero: every parameter gets gradient at step 0)
        nn.init.zeros_(last.bias)
        with torch.no_grad():
            # Random init (DECA's weights replace it): the per-frame code starts near zero (mean face, frontal,
            # centred) with a plausible camera scale, instead of random poses/translations off-screen.
            nn.init.normal_(self.layers[-1].weight, std=1e-5)  # random ResNet features are O(10)
            nn.init.zeros_(self.layers[-1].bias)
            (self.layers[-1] if cfg.residual else last).bias[d - 3] += cfg.init_cam_scale
        self.residual = cfg.residual
        self.split_sizes = [cfg.n_shape, cfg.n_albedo, cfg.n_light, 3, 3]

    def embed(self, images: torch.Tensor, points: torch.Tensor | None = None,
              points_valid: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,T,3,H,W) [+ points (B,T,P,3) crop px, points_valid (B,T)] -> per-frame 183-d embeddings (B,T,183).
        Without a landmark encoder the points are ignored; with one, ``points=None`` is the missing detection."""
        x, b, t = _flatten_frames(images)
        e = self.layers(self.backbone(x)).reshape(b, t, -1)
        if self.landmarks is not None:
            e = e + self.landmark_proj(self.landmarks(points, points_valid, images.shape[-1], (b, t), generator))
        return e

    def forward(self, images: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                points: torch.Tensor | None = None, points_valid: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> CoarseCode:
        e = self.embed(images, points, points_valid, generator)
        h = self.transformer(e, key_padding_mask) if self.temporal else e
        c = self.head(h)
        if self.residual:  # the per-frame (DECA-initialised) estimate is refined temporally
            c = e + c
        shape, albedo, light, pose, cam = torch.split(c, self.split_sizes, dim=-1)
        return CoarseCode(shape, albedo, light.reshape(*light.shape[:2], -1, 3), pose, cam, c)

    def code_from_embeddings(self, e: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> CoarseCode:
        """Temporal part of :meth:`forward`: per-frame embeddings ``e (B,T,183)`` from :meth:`embed` -> the code.

        ``forward(images) == code_from_embeddings(embed(images))``; inference computes :meth:`embed` once per frame
        and runs only this part per sliding window (:mod:`avface.inference.windows`).
        """
        h = self.transformer(e, key_padding_mask) if self.temporal else e
        c = self.head(h)
        if self.residual:
            c = e + c
        shape, albedo, light, pose, cam = torch.split(c, self.split_sizes, dim=-1)
        return CoarseCode(shape, albedo, light.reshape(*light.shape[:2], -1, 3), pose, cam, c)


class AudioEncoder(nn.Module):
    """E_a: 1D convolutions over a (16, F) window (F = feature channels, convolution along the 16 steps)
    -> (..., embed). Accepts (B, T, 16, F) or (N, 16, F). With ``mean``/``std`` (F,) the features are
    standardised per channel first (:class:`~avface.models.blocks.FeatureStandardizer`)."""

    def __init__(self, audio_dim: int, window: int, cfg: AudioEncoderConfig, mean: list[float] | None = None,
                 std: list[float] | None = None):
        super().__init__()
        self.standardize = FeatureStandardizer(audio_dim, mean, std)
        mods: list[nn.Module] = []
        c_in, length = audio_dim, window
        for c in cfg.channels:
            mods += [nn.Conv1d(c_in, c, cfg.kernel, stride=2, padding=cfg.kernel // 2), nn.LeakyReLU(0.2, True)]
            c_in, length = c, (length + 2 * (cfg.kernel // 2) - cfg.kernel) // 2 + 1
        self.conv = nn.Sequential(*mods)
        self.fc = nn.Linear(c_in * length, cfg.embed)
        self.out_dim = cfg.embed

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        lead = audio.shape[:-2]
        x = self.standardize(audio.reshape(-1, *audio.shape[-2:])).transpose(1, 2)  # (N, F, 16)
        x = self.conv(x).flatten(1)
        return self.fc(x).reshape(*lead, -1)


@dataclass
class ExpressionJawOutput:
    expression: torch.Tensor  # (B,T,50)
    jaw: torch.Tensor  # (B,T,3) axis-angle
    f_audio: torch.Tensor | None  # (B,T,64) after dropout/zeroing (None when the modality is not used)
    f_video: torch.Tensor | None  # (B,T,64)
    audio_keep: torch.Tensor  # (B,T) float, 1 where the audio embedding was kept
    video_keep: torch.Tensor  # (B,T)


class ExpressionJawEncoder(nn.Module):
    """Expression-jaw branch: f_a = E_a(audio), f_v = E_v(images) -> concat -> transformer -> 3 FF -> e (53).

    Modality dropout (training only, ``cfg.modality_dropout``): f_a zeroed with p 0.4, f_v with p 0.5.
    A missing modality (``audio=None`` / ``images=None``, or ``audio_valid`` / ``video_valid`` (B,T) False)
    is the zero embedding, in training and at inference. ``landmarks`` (the landmark input): the per-frame
    landmark embedding f_l (its own dropout, :mod:`avface.models.landmark_encoder`) joins as ``[f_a | f_v | f_l]``.
    """

    def __init__(self, cfg: ExpressionJawConfig, audio_dim: int, audio_window: int = 16,
                 audio_mean: list[float] | None = None, audio_std: list[float] | None = None,
                 landmarks: LandmarkEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.use_audio = cfg.modalities in ("av", "audio")
        self.use_video = cfg.modalities in ("av", "video")
        width = 0
        if self.use_audio:
            self.audio_encoder = AudioEncoder(audio_dim, audio_window, cfg.audio, audio_mean, audio_std)
            width += cfg.audio.embed
        if self.use_video:
            self.video_backbone = ResNet(cfg.backbone)
            self.video_fc = nn.Linear(self.video_backbone.out_channels, cfg.video_embed)
            width += cfg.video_embed
        self.landmarks = None if landmarks is None else LandmarkEncoder(landmarks)
        if self.landmarks is not None:
            width += self.landmarks.out_dim
        if cfg.temporal:
            self.transformer = TemporalTransformer(width, cfg.transformer)
            d = self.transformer.out_dim
        else:
            d = width
        self.head = projection_head(d, cfg.n_expression + cfg.n_jaw, cfg.head)
        nn.init.normal_(self.head[-1].weight, std=1e-3)
        nn.init.zeros_(self.head[-1].bias)

    def dropout_masks(self, b: int, t: int, device: torch.device,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep masks (B,T) for audio and video drawn with p_drop_audio / p_drop_video."""
        cfg = self.cfg
        n = t if cfg.dropout_per == "frame" else 1
        u = torch.rand(3, b, n, generator=generator, device="cpu" if generator is None else generator.device)
        u = u.to(device)
        drop_a = u[0] < cfg.p_drop_audio if self.use_audio else torch.zeros_like(u[0], dtype=torch.bool)
        drop_v = u[1] < cfg.p_drop_video if self.use_video else torch.zeros_like(u[0], dtype=torch.bool)
        if not cfg.allow_both_dropped and self.use_audio and self.use_video:
            both = drop_a & drop_v
            keep_audio_instead = u[2] < 0.5
            drop_a = drop_a & ~(both & keep_audio_instead)
            drop_v = drop_v & ~(both & ~keep_audio_instead)
        keep_a = (~drop_a).float().expand(b, t)
        keep_v = (~drop_v).float().expand(b, t)
        return keep_a, keep_v

    def forward(self, images: torch.Tensor | None, audio: torch.Tensor | None,
                audio_valid: torch.Tensor | None = None, video_valid: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                key_padding_mask: torch.Tensor | None = None, points: torch.Tensor | None = None,
                points_valid: torch.Tensor | None = None) -> ExpressionJawOutput:
        ref = images if images is not None else audio
        if ref is None:
            raise ValueError("need images or audio")
        b, t = ref.shape[:2]
        dev = ref.device
        keep_a = torch.ones(b, t, device=dev)
        keep_v = torch.ones(b, t, device=dev)
        if self.training and self.cfg.modality_dropout:
            keep_a, keep_v = self.dropout_masks(b, t, dev, generator)
        if audio_valid is not None:
            keep_a = keep_a * audio_valid.to(keep_a)
        if video_valid is not None:
            keep_v = keep_v * video_valid.to(keep_v)
        feats = []
        f_a = f_v = None
        if self.use_audio:
            if audio is None:
                f_a = torch.zeros(b, t, self.cfg.audio.embed, device=dev)
                keep_a = torch.zeros_like(keep_a)
            else:
                f_a = self.audio_encoder(audio) * keep_a[..., None]
            feats.append(f_a)
        if self.use_video:
            if images is None:
                f_v = torch.zeros(b, t, self.cfg.video_embed, device=dev)
                keep_v = torch.zeros_like(keep_v)
            else:
                x, _, _ = _flatten_frames(images)
                f_v = self.video_fc(self.video_backbone(x)).reshape(b, t, -1) * keep_v[..., None]
            feats.append(f_v)
        if self.landmarks is not None:
            size = images.shape[-1] if images is not None else 1
            feats.append(self.landmarks(points, points_valid, size, (b, t), generator).to(ref.dtype))
        h = torch.cat(feats, dim=-1)
        if self.cfg.temporal:
            h = self.transformer(h, key_padding_mask)
        e = self.head(h)
        return ExpressionJawOutput(e[..., : self.cfg.n_expression], e[..., self.cfg.n_expression:], f_a, f_v,
                                   keep_a, keep_v)

    def frame_features(self, images: torch.Tensor | None, audio: torch.Tensor | None,
                       audio_valid: torch.Tensor | None = None,
                       video_valid: torch.Tensor | None = None, points: torch.Tensor | None = None,
                       points_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-frame part of :meth:`forward` without modality dropout (inference): ``images (B,T,3,H,W)``,
        ``audio (B,T,16,F)`` (either may be None: the zero embedding), ``points (B,T,P,3)`` crop px with
        ``points_valid (B,T)`` (a landmark-input model; None: no detection) -> ``(h (B,T,D) = [f_a | f_v | f_l],
        keep_a (B,T), keep_v (B,T))``. In eval mode ``forward(...) == code_from_features(frame_features(...)[0])``."""
        ref = images if images is not None else audio
        if ref is None:
            raise ValueError("need images or audio")
        b, t = ref.shape[:2]
        dev = ref.device
        keep_a = torch.ones(b, t, device=dev) if audio_valid is None else audio_valid.to(dev, torch.float32)
        keep_v = torch.ones(b, t, device=dev) if video_valid is None else video_valid.to(dev, torch.float32)
        feats = []
        if self.use_audio:
            if audio is None:
                keep_a = torch.zeros_like(keep_a)
                feats.append(torch.zeros(b, t, self.cfg.audio.embed, device=dev))
            else:
                feats.append(self.audio_encoder(audio) * keep_a[..., None])
        if self.use_video:
            if images is None:
                keep_v = torch.zeros_like(keep_v)
                feats.append(torch.zeros(b, t, self.cfg.video_embed, device=dev))
            else:
                x, _, _ = _flatten_frames(images)
                feats.append(self.video_fc(self.video_backbone(x)).reshape(b, t, -1) * keep_v[..., None])
        if self.landmarks is not None:
            size = images.shape[-1] if images is not None else 1
            feats.append(self.landmarks(points, points_valid, size, (b, t)).to(ref.dtype))
        return torch.cat(feats, dim=-1), keep_a, keep_v

    def code_from_features(self, h: torch.Tensor,
                           key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal part of :meth:`forward`: ``h (B,T,D)`` from :meth:`frame_features` -> ``(expression (B,T,50),
        jaw (B,T,3))``."""
        if self.cfg.temporal:
            h = self.transformer(h, key_padding_mask)
        e = self.head(h)
        return e[..., : self.cfg.n_expression], e[..., self.cfg.n_expression:]


"""Appearance styles of the synthetic VoxCeleb2 clips: what the images look like, never the geometry.

``studio`` (the default, the corpus as it always was): a Lambertian face with smooth per-vertex albedo under one
key light and ambient, a flat hair/head silhouette over a blurred background, faint sensor noise.

``real`` differs from it the way real talking-face footage does, each with the project's CPU renderer and
numpy/cv2 image operations:

- skin: a fixed UV texture per speaker (pores, blotches, freckles) multiplies the albedo, and a Blinn-Phong
  specular lobe (oilier on the T-zone) is added for every light;
- lighting from several directions: ambient, a key, a fill from the other side and a rim light from behind,
  each tinted (SH projection of directional lights: the renderer's 9-band model);
- hair: a strand texture in the head silhouette and a fringe drawn over the forehead;
- backgrounds with structure: rooms with shelves of books, windows, frames and doors, sharp-ish, with texture;
- the camera: white balance and exposure, vignetting, defocus and some motion blur, shot and read noise, and
  JPEG compression of every frame (before the corpus's own H.264).

Randomness comes from its own streams (``style_rng``): a clip's geometry, audio, camera, occlusion placement
and ground truth are the same in every style for the same seed; only the pixels (and the stored ``sh``) differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from avface.render.shading import SH_CONSTANTS
from avface.synth.config import STYLES, AppearanceStyle

__all__ = ["AppearanceStyle", "STYLES", "RealLook", "style_rng", "real_look", "structured_background",
           "directional_sh", "skin_maps", "shade_real", "hair_fringe", "hair_strands", "camera_degrade"]

#: SH normalisation of DECA's basis polynomials: its constants divided by the Lambertian band factors
_BAND_FACTOR = np.array([np.pi, *(2 * np.pi / 3,) * 3, *(np.pi / 4,) * 5])
_SH_NORM = np.asarray(SH_CONSTANTS) / _BAND_FACTOR
_UV_SIZE = 256  # skin texture resolution (a 224 px face covers about 150 px of it)


@dataclass
class RealLook:
    """One video's draws of the ``real`` style (shared by its clips, like the studio scene)."""

    background: np.ndarray  # (H, W, 3) uint8 structured room
    sh: np.ndarray  # (9, 3) float32 SH irradiance of all lights
    light_dirs: np.ndarray  # (L, 3) unit directions towards the lights (model ~ camera frame)
    light_colors: np.ndarray  # (L, 3) specular colour x intensity
    shininess: float  # Blinn-Phong exponent
    wb_gain: np.ndarray  # (3,) white balance error
    exposure: float  # multiplicative
    gamma: float  # tone curve exponent
    vignette: float  # relative darkening at the corners
    blur_sigma: float  # px defocus (0.4-1.3 px at 224 px)
    motion_blur_prob: float  # fraction of frames with a short motion blur
    read_noise: float  # 8-bit levels
    shot_noise: float  # photon noise: sigma = shot_noise * sqrt(signal), both in 8-bit levels
    jpeg_quality: int


def style_rng(seed: int, *key: int) -> np.random.Generator:
    """The style's own stream (apart from the corpus's identity / scene / clip / occlusion streams)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(5, *(int(k) for k in key))))


def directional_sh(dirs: np.ndarray, colors: np.ndarray, ambient: np.ndarray) -> np.ndarray:
    """(9, 3) float32 SH coefficients (DECA's basis) of directional lights: ``dirs`` (L, 3) unit vectors towards
    them, ``colors`` (L, 3) peak irradiance per RGB channel, ``ambient`` (3,) uniform irradiance. The renderer's
    irradiance is then ``ambient + sum_l colors_l max(0, n . d_l)`` up to the 9-band truncation."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    poly = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], 1)  # (L, 9)
    sh = np.einsum("lk,lc->kc", poly * _SH_NORM, colors)
    sh[0] += np.asarray(ambient) / SH_CONSTANTS[0]
    return sh.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def real_look(rng: np.random.Generator, size: int) -> RealLook:
    """Draw one video's look: room, lights, camera."""
    warm = np.array([1.0, 0.9, 0.75])
    cool = np.array([0.8, 0.9, 1.05])
    side = rng.choice([-1.0, 1.0])
    key_d = _unit(np.array([side * rng.uniform(0.3, 1.0), rng.uniform(0.0, 0.8), rng.uniform(0.4, 1.0)]))
    fill_d = _unit(np.array([-side * rng.uniform(0.5, 1.0), rng.uniform(-0.3, 0.4), rng.uniform(0.3, 1.0)]))
    rim_d = _unit(np.array([rng.uniform(-1, 1), rng.uniform(0.2, 1.0), -rng.uniform(0.3, 1.0)]))
    key_c = rng.uniform(0.45, 0.85) * (warm if rng.random() < 0.5 else np.ones(3)) * rng.uniform(0.92, 1.08, 3)
    fill_c = rng.uniform(0.08, 0.3) * (cool if rng.random() < 0.5 else np.ones(3))
    rim_c = rng.uniform(0.1, 0.45) * (cool if rng.random() < 0.5 else warm)
    dirs, colors = np.stack([key_d, fill_d, rim_d]), np.stack([key_c, fill_c, rim_c])
    ambient = rng.uniform(0.2, 0.45) * rng.uniform(0.9, 1.1, 3)
    return RealLook(
        background=structured_background(rng, size, size),
        sh=directional_sh(dirs, colors, ambient), light_dirs=dirs.astype(np.float32),
        light_colors=(colors * rng.uniform(0.15, 0.45)).astype(np.float32), shininess=float(rng.uniform(12, 40)),
        wb_gain=np.clip(1 + rng.normal(0, 0.07, 3), 0.8, 1.2).astype(np.float32),
        exposure=float(np.exp(rng.normal(0, 0.15))), gamma=float(rng.uniform(0.85, 1.15)),
        vignette=float(rng.uniform(0.1, 0.4)), blur_sigma=float(rng.uniform(0.4, 1.3)) * size / 224,
        motion_blur_prob=float(rng.uniform(0.0, 0.3)), read_noise=float(rng.uniform(1.5, 4.0)),
        shot_noise=float(rng.uniform(0.15, 0.4)), jpeg_quality=int(rng.integers(25, 70)))


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 255) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.integers(lo, hi + 1, 3))


def structured_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 a room behind the speaker: a lit wall (gradient) with a shelf of books, a window, picture
    frames, a door edge, a plant; texture noise and a light defocus (much less than the studio's)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.array(_color(rng, 60, 230), np.float32)
    lx, ly = rng.uniform(0, w), rng.uniform(-h / 2, h / 2)
    light = 1.15 - 0.6 * np.clip(np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / (1.2 * max(h, w)), 0, 1)
    img = wall * light[..., None]
    # a window (bright, with mullions)
    if rng.random() < 0.6:
        x0, y0 = int(rng.integers(-w // 4, w - w // 4)), int(rng.integers(-h // 4, h // 2))
        ww, wh = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2))
        sky = np.array(_color(rng, 170, 255), np.float32)
        cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), tuple(float(c) for c in sky), -1)
        frame_c = _color(rng, 180, 255)
        t = max(1, w // 60)
        cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), frame_c, t)
        cv2.line(img, (x0 + ww // 2, y0), (x0 + ww // 2, y0 + wh), frame_c, t)
        cv2.line(img, (x0, y0 + wh // 2), (x0 + ww, y0 + wh // 2), frame_c, t)
    # shelves of books
    for _ in range(int(rng.integers(0, 3))):
        sx0, sx1 = sorted(rng.integers(-w // 4, w + w // 4, 2))
        sy = int(rng.integers(h // 5, h))
        board = _color(rng, 40, 160)
        x = int(sx0)
        while x < sx1:
            bw, bh = int(rng.integers(max(2, w // 70), max(3, w // 25))), int(rng.integers(h // 14, h // 6))
            cv2.rectangle(img, (x, sy - bh), (x + bw, sy), _color(rng, 20, 230), -1)
            cv2.line(img, (x, sy - bh), (x, sy), (20.0, 20.0, 20.0), 1)
            x += bw + int(rng.integers(0, 2))
        cv2.rectangle(img, (int(sx0), sy), (int(sx1), sy + max(2, h // 40)), board, -1)
    # picture frames and a door edge
    for _ in range(int(rng.integers(0, 3))):
        px, py = int(rng.integers(0, w)), int(rng.integers(0, h // 2))
        pw, ph = int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 12, h // 4))
        cv2.rectangle(img, (px, py), (px + pw, py + ph), _color(rng), -1)
        cv2.rectangle(img, (px, py), (px + pw, py + ph), _color(rng, 0, 120), max(1, w // 90))
    if rng.random() < 0.5:
        dx = int(rng.integers(0, w))
        cv2.rectangle(img, (dx, 0), (dx + int(rng.integers(w // 20, w // 6)), h), _color(rng, 30, 200), -1)
    # a plant: a cluster of leaves
    if rng.random() < 0.4:
        cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 2, h))
        green = np.array([rng.uniform(20, 70), rng.uniform(80, 150), rng.uniform(20, 70)])
        for _ in range(int(rng.integers(8, 20))):
            c = tuple(float(v) for v in green * rng.uniform(0.6, 1.3))
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(img, (cx + int(rng.normal(0, w / 20)), cy + int(rng.normal(0, h / 20))),
                        (int(rng.integers(w // 40, w // 15)), int(rng.integers(w // 120 + 1, w // 40 + 2))), ang,
                        0, 360, c, -1, cv2.LINE_AA)
    img = img + rng.normal(0, 6, (h, w, 1)).astype(np.float32) + rng.normal(0, 2, (h, w, 3)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.2)) * max(h, w) / 224)
    return np.clip(img, 0, 255).astype(np.uint8)


def skin_maps(rng: np.random.Generator, size: int = _UV_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A speaker's skin in UV space: (3, U, U) float32 albedo modulation around 1 (pores, blotches, freckles)
    and (1, U, U) float32 specular strength (oilier along the forehead-nose-chin T-zone: UV u ~ 0.5)."""
    pores = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.0)
    blotch = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), size / 40)
    pores /= pores.std() + 1e-6
    blotch /= blotch.std() + 1e-6
    mod = 1.0 + rng.uniform(0.015, 0.035) * pores[None] + rng.uniform(0.03, 0.06) * blotch[None] * np.array(
        [0.4, 1.0, 1.0], np.float32)[:, None, None]  # blotches are redder: less red lost than green/blue
    if rng.random() < 0.35:  # freckles
        fr = np.zeros((size, size), np.float32)
        n = int(rng.integers(40, 200))
        fr[rng.integers(0, size, n), rng.integers(0, size, n)] = 1.0
        fr = cv2.GaussianBlur(fr, (0, 0), 1.2)
        fr /= fr.max() + 1e-6
        mod = mod * (1.0 - 0.35 * fr[None] * np.array([0.7, 1.0, 1.1], np.float32)[:, None, None])
    u = np.linspace(0, 1, size, dtype=np.float32)
    tzone = np.exp(-((u[None, :] - 0.5) / 0.12) ** 2) * np.ones((size, 1), np.float32)
    oil = (0.5 + 0.5 * tzone) * (1.0 + 0.3 * pores)
    return mod.astype(np.float32), np.clip(oil, 0, 2)[None].astype(np.float32)


def shade_real(image: torch.Tensor, alpha: torch.Tensor, albedo: torch.Tensor, shading: torch.Tensor,
               normals: torch.Tensor, uv_grid: torch.Tensor, background: torch.Tensor, look: RealLook,
               skin_mod: torch.Tensor, oil: torch.Tensor) -> torch.Tensor:
    """Re-shade a render with skin texture and specular highlights.

    image, albedo, shading, normals (camera frame), background: (B, 3, H, W); alpha (B, 1, H, W); uv_grid
    (B, H, W, 2) (``RenderOutput``); skin_mod (1, 3, U, U), oil (1, 1, U, U) from :func:`skin_maps`.
    Returns (B, 3, H, W) in [0, 1]: ``albedo * skin(uv) * shading + specular`` over the background.
    """
    b = image.shape[0]
    grid = uv_grid
    tex = F.grid_sample(skin_mod.expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    spec_w = F.grid_sample(oil.expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    view = torch.tensor([0.0, 0.0, 1.0])
    spec = torch.zeros_like(image)
    for d, c in zip(torch.from_numpy(look.light_dirs), torch.from_numpy(look.light_colors), strict=True):
        half = F.normalize(d + view, dim=0)
        ndh = torch.clamp(torch.einsum("bchw,c->bhw", normals, half), min=0.0)
        lit = (torch.einsum("bchw,c->bhw", normals, d) > 0).float()
        spec = spec + (lit * ndh ** look.shininess)[:, None] * c[None, :, None, None]
    face = albedo * tex * shading + spec * spec_w
    return (face * alpha + background * (1.0 - alpha)).clamp(0.0, 1.0)


def hair_strands(rng: np.random.Generator, h: int, w: int, color: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 a hair texture: streaks (noise smeared along a wavy vertical flow) of `color` with
    lighter and darker strands."""
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    k = max(3, h // 12) | 1
    streak = cv2.filter2D(noise, -1, np.ones((k, 1), np.float32) / k)  # smear vertically: strands
    streak /= streak.std() + 1e-6
    low = cv2.GaussianBlur(noise, (0, 0), w / 30)
    shade = 1.0 + 0.28 * streak + 0.12 * low / (low.std() + 1e-6)
    return np.clip(np.asarray(color, np.float32)[None, None] * shade[..., None], 0, 255)


def hair_fringe(frame: np.ndarray, landmarks: np.ndarray, alpha: np.ndarray, strands: np.ndarray, coverage: float,
                phase: float) -> np.ndarray:
    """Draw hair over the top of the face: the face pixels (``alpha`` (H, W) bool) above a wavy hairline
    ``coverage`` inter-ocular distances above the brows (landmarks (68, 2) px), its waves at ``phase`` (rad, one
    per clip: the hairline does not flicker). Returns the (H, W, 3) uint8 frame; the brows stay visible for
    coverage > 0.2."""
    h, w = alpha.shape
    iod = float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
    brow = landmarks[17:27]
    xs = np.arange(w, dtype=np.float32)
    line = np.interp(xs, brow[:, 0], brow[:, 1]) - coverage * iod
    line += 0.08 * iod * np.sin(xs / max(iod, 1.0) * 4.0 + phase)
    above = (np.arange(h, dtype=np.float32)[:, None] < line[None, :]) & alpha
    soft = cv2.GaussianBlur(above.astype(np.float32), (0, 0), 0.8)[..., None]
    out = frame.astype(np.float32) * (1 - soft) + strands * soft
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def camera_degrade(rng: np.random.Generator, frames: np.ndarray, look: RealLook) -> np.ndarray:
    """A consumer camera's look on (T, H, W, 3) uint8 frames: white balance, exposure and tone curve,
    vignetting, defocus (and a short motion blur on some frames), shot + read noise, then JPEG compression of
    each frame. Returns (T, H, W, 3) uint8."""
    t, h, w, _ = frames.shape
    # white balance, exposure and the tone curve of 8-bit values: one lookup table per channel
    levels = np.arange(256, dtype=np.float32) / 255.0
    lut = np.stack([np.clip(levels * g * look.exposure, 0, 1) ** look.gamma for g in look.wb_gain], 1)  # (256, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    vignette = (1.0 - look.vignette * r2)[..., None]
    # Demosaicing correlates a sensor's noise over neighbouring pixels (and so it survives the JPEG): white noise
    # blurred by 0.7 px, rescaled to unit spread. A few fields per clip, each frame a random shift of one (drawing
    # fresh normals for every frame cost more than the rest of the camera together).
    bank = [cv2.GaussianBlur(rng.standard_normal((h, w, 3), dtype=np.float32), (0, 0), 0.7) * 2.3 for _ in range(4)]
    out = np.empty_like(frames)
    for i in range(t):
        f = np.take_along_axis(lut, frames[i].reshape(-1, 3).astype(np.intp), 0).reshape(h, w, 3) * vignette
        f = cv2.GaussianBlur(f, (0, 0), look.blur_sigma)
        if rng.random() < look.motion_blur_prob:
            k = int(rng.integers(3, 7))
            kern = np.zeros((k, k), np.float32)
            kern[k // 2] = 1.0 / k
            rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
            kern = cv2.warpAffine(kern, rot, (k, k))
            f = cv2.filter2D(f, -1, kern / max(kern.sum(), 1e-6))
        sigma = np.sqrt((look.read_noise / 255.0) ** 2 + (look.shot_noise / 255.0) ** 2 * 255.0 * f)
        grain = np.roll(bank[int(rng.integers(len(bank)))], (int(rng.integers(h)), int(rng.integers(w))), (0, 1))
        f = f + sigma * grain
        u8 = np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] if ok else u8
    return out

"""Colour transfer of the hand onto the face's skin: Lab statistics (the default) or sliced optimal transport.

`transfer_lab_stats` (Reinhard et al. 2001, in CIELAB): the hand's chroma (a*, b*) gets the skin's mean and
spread, its lightness L* the skin's mean with the hand's own shading (L* deviations) kept. A face's skin is a
narrow distribution: matching it exactly (the sliced OT below) flattens the hand's shading, and any background
or hair in the target becomes the hand's colour; mean and spread in a perceptual space do neither.

`sliced_ot_transfer` (Pitie et al. 2005; Rabin et al. 2011; Bonneel et al. 2015):

The hand's colour distribution (N points in RGB) is moved onto the face's (M points) by repeating: pick random
3D directions, project both clouds on each, match them in 1D by sorting (the 1D optimal transport is the
monotone rearrangement), and move every source point along the direction by its 1D displacement. Iterating
makes the *sliced* Wasserstein distance between the clouds go to ~0, which also makes the full 3D distributions
match closely.

The per-point map can be noisy (neighbouring pixels of similar colour may get different displacements); the
optional bilateral regularisation (Rabin, Delon & Gousseau 2010) smooths the displacement field over the image
with weights from the original source colours, so edges of the hand's shading are kept.
"""

from __future__ import annotations

import cv2
import numpy as np


def _directions(n_dirs: int, rng: np.random.Generator) -> np.ndarray:
    """(n_dirs, 3) unit directions. For n_dirs <= 3 an orthonormal basis (each step then moves along
    independent axes, the classic Pitie iteration); otherwise i.i.d. uniform directions on the sphere."""
    if n_dirs <= 3:
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        return q.T[:n_dirs]
    d = rng.standard_normal((n_dirs, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def sliced_ot_transfer(
    source: np.ndarray,
    target: np.ndarray,
    n_iter: int = 30,
    n_dirs: int = 3,
    rng: np.random.Generator | None = None,
    step: float = 1.0,
) -> np.ndarray:
    """Move `source` colours onto the distribution of `target` colours by sliced OT.

    source: (N, 3) float, target: (M, 3) float (any common scale, e.g. RGB in [0, 1]); N and M may differ.
    n_iter: iterations; n_dirs: random directions per iteration; rng: randomness (default seed 0); step: step
    size in (0, 1] (1 = full 1D transport per iteration).
    Returns (N, 3) float64 transported source colours (not clipped).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 3 or target.ndim != 2 or target.shape[1] != 3:
        raise ValueError(f"source and target must be (N, 3) and (M, 3), got {source.shape} and {target.shape}")
    if len(source) == 0 or len(target) == 0:
        raise ValueError("sliced OT needs non-empty source and target colour sets")
    if n_iter < 1 or n_dirs < 1:
        raise ValueError(f"n_iter and n_dirs must be >= 1, got {n_iter}, {n_dirs}")
    rng = np.random.default_rng(0) if rng is None else rng
    x = source.copy()
    n, m = len(x), len(target)
    # Quantile levels of the source ranks; the target's sorted projections are interpolated at the same levels
    # (this is the 1D OT map between empirical measures of different sizes).
    q_src = (np.arange(n) + 0.5) / n
    q_tgt = (np.arange(m) + 0.5) / m
    # With i.i.d. directions, sum_d d d^T ~ (n_dirs / 3) I: scaling by 3 / n_dirs keeps the step size comparable.
    scale = step * (1.0 if n_dirs <= 3 else 3.0 / n_dirs)
    for _ in range(n_iter):
        dirs = _directions(n_dirs, rng)  # (D, 3)
        px = x @ dirs.T  # (N, D)
        pt = np.sort(target @ dirs.T, axis=0)  # (M, D)
        order = np.argsort(px, axis=0)
        disp = np.empty_like(px)
        for k in range(dirs.shape[0]):
            matched = np.interp(q_src, q_tgt, pt[:, k]) if n != m else pt[:, k]
            disp[order[:, k], k] = matched - px[order[:, k], k]
        x += scale * disp @ dirs
    return x


def joint_bilateral(field: np.ndarray, guide: np.ndarray, weight: np.ndarray, radius: int = 4,
                    sigma_space: float = 3.0, sigma_color: float = 0.08) -> np.ndarray:
    """Joint (cross) bilateral filter of `field` guided by `guide`, restricted to pixels with `weight` > 0.

    field (H, W, C) float32, guide (H, W, 3) float32 in [0, 1], weight (H, W) float32 (e.g. alpha).
    Returns (H, W, C) float32. Vectorised over pixels: one shifted copy per window offset ((2r+1)^2 of them).
    """
    field = field.astype(np.float32)
    guide = guide.astype(np.float32)
    weight = weight.astype(np.float32)
    pad = ((radius, radius), (radius, radius), (0, 0))
    fp = np.pad(field, pad, mode="edge")
    gp = np.pad(guide, pad, mode="edge")
    wp = np.pad(weight, pad[:2], mode="constant")
    h, w = weight.shape
    num = np.zeros_like(field)
    den = np.zeros((h, w), np.float32)
    inv_s = -0.5 / sigma_space**2
    inv_c = -0.5 / sigma_color**2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            sl = (slice(radius + dy, radius + dy + h), slice(radius + dx, radius + dx + w))
            dc = ((gp[sl] - guide) ** 2).sum(-1)
            wgt = wp[sl] * np.exp(inv_s * (dx * dx + dy * dy) + inv_c * dc)
            num += wgt[..., None] * fp[sl]
            den += wgt
    return num / np.maximum(den, 1e-8)[..., None]


def transfer_hand_colors(
    hand_rgba: np.ndarray,
    target_colors: np.ndarray,
    n_iter: int = 30,
    n_dirs: int = 3,
    rng: np.random.Generator | None = None,
    bilateral: bool = True,
    max_source: int = 40000,
    keep_detail: float = 0.0,
) -> np.ndarray:
    """Recolour an RGBA hand so its colours follow `target_colors` (face pixels).

    hand_rgba (h, w, 4) float32 in [0, 1] straight alpha; target_colors (M, 3) float in [0, 1].
    The transport is computed on the visible hand pixels (alpha > 0.5; subsampled to `max_source` if larger,
    the remaining pixels then get the displacement of their nearest sampled colour via the bilateral step or
    the mean displacement). keep_detail in [0, 1]: fraction of the hand's own fine luminance detail (original
    minus its blur: creases, nail rims, gaps between fingers) added back after the transfer; a face's skin
    distribution is narrow, and matching it exactly flattens that detail. Returns the recoloured (h, w, 4)
    float32; alpha unchanged.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    rgb = hand_rgba[..., :3].astype(np.float32)
    alpha = hand_rgba[..., 3]
    vis = alpha > 0.5
    idx = np.flatnonzero(vis)
    if idx.size == 0:
        raise ValueError("hand has no visible pixels (alpha > 0.5) to recolour")
    if idx.size > max_source:
        idx = np.sort(rng.choice(idx, max_source, replace=False))
    src = rgb.reshape(-1, 3)[idx]
    moved = sliced_ot_transfer(src, target_colors, n_iter=n_iter, n_dirs=n_dirs, rng=rng)
    disp = np.zeros_like(rgb).reshape(-1, 3)
    disp[idx] = (moved - src).astype(np.float32)
    known = np.zeros(rgb.shape[:2], np.float32).reshape(-1)
    known[idx] = 1.0
    disp = disp.reshape(rgb.shape)
    known = known.reshape(rgb.shape[:2])
    if bilateral:
        disp = joint_bilateral(disp, rgb, known)
    else:
        # Fill unsampled pixels by normalised convolution so every pixel gets a displacement.
        num = cv2.GaussianBlur(disp * known[..., None], (0, 0), 2.0)
        den = cv2.GaussianBlur(known, (0, 0), 2.0)[..., None]
        disp = np.where(known[..., None] > 0, disp, num / np.maximum(den, 1e-6))
    # Pixels far from any sampled pixel (transparent surround) get the mean displacement: they are only visible
    # through bilinear filtering at the edge, and the mean keeps them close to the recoloured hand.
    mean_disp = (disp * known[..., None]).sum((0, 1)) / max(known.sum(), 1.0)
    far = cv2.dilate(known, np.ones((9, 9), np.uint8)) == 0  # beyond the bilateral window (radius 4)
    disp[far] = mean_disp
    new = rgb + disp
    if keep_detail > 0:
        lum = rgb.mean(-1)
        sigma = max(1.0, 0.02 * max(rgb.shape[:2]))
        new = new + keep_detail * (lum - cv2.GaussianBlur(lum, (0, 0), sigma))[..., None]
    out = hand_rgba.astype(np.float32).copy()
    out[..., :3] = np.clip(new, 0.0, 1.0)
    return out


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) float32 CIELAB (L* in [0, 100], a*, b* about [-128, 127]; D65, sRGB)."""
    x = np.asarray(rgb, np.float32)
    return cv2.cvtColor(x.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(x.shape)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(..., 3) CIELAB -> (..., 3) float32 RGB (not clipped to [0, 1])."""
    x = np.asarray(lab, np.float32)
    return cv2.cvtColor(x.reshape(-1, 1, 3), cv2.COLOR_Lab2RGB).reshape(x.shape)


def transfer_lab_stats(hand_rgba: np.ndarray, target_colors: np.ndarray, shading: float = 1.0,
                       max_chroma_gain: float = 2.0) -> np.ndarray:
    """Recolour an RGBA hand to the mean and spread of `target_colors` (skin pixels) in CIELAB.

    hand_rgba (h, w, 4) float32 in [0, 1] straight alpha; target_colors (M, 3) float in [0, 1].
    Statistics of the hand are taken over its visible pixels (alpha > 0.5). a*, b*: ``mu_t + (x - mu_h) * g`` with
    g = sigma_t / sigma_h per channel (at most `max_chroma_gain`: a near-uniform hand would otherwise get its
    noise amplified). L*: ``mu_t + shading * (L - mu_h)``: `shading` = 1 keeps the hand's own shading (creases,
    knuckles, the side away from the light), 0 makes it flat. Returns the recoloured (h, w, 4) float32; alpha
    unchanged.
    """
    target = np.asarray(target_colors, np.float64)
    if target.ndim != 2 or target.shape[1] != 3 or len(target) == 0:
        raise ValueError(f"target colours must be a non-empty (M, 3) array, got {target.shape}")
    rgb = hand_rgba[..., :3].astype(np.float32)
    vis = hand_rgba[..., 3] > 0.5
    if not vis.any():
        raise ValueError("hand has no visible pixels (alpha > 0.5) to recolour")
    lab = rgb_to_lab(rgb)
    tgt = rgb_to_lab(target.astype(np.float32))
    mu_h, sd_h = lab[vis].mean(0), lab[vis].std(0)
    mu_t, sd_t = tgt.mean(0), tgt.std(0)
    gain = np.empty(3, np.float32)
    gain[0] = shading
    gain[1:] = np.minimum(sd_t[1:] / np.maximum(sd_h[1:], 1e-3), max_chroma_gain)
    new = mu_t + (lab - mu_h) * gain
    new[..., 0] = np.clip(new[..., 0], 0.0, 100.0)
    out = hand_rgba.astype(np.float32).copy()
    out[..., :3] = np.clip(lab_to_rgb(new), 0.0, 1.0)
    return out

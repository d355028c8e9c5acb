"""Scene around the rendered face: backgrounds, a head/hair/shoulder silhouette, SH lighting, sensor noise."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["random_background", "random_sh", "studio_sh", "draw_head_silhouette", "add_sensor_noise"]


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 255) -> np.ndarray:
    return rng.integers(lo, hi + 1, 3).astype(np.float32)


def random_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8: a linear or radial gradient, low-frequency noise, or random shapes (rooms, shelves,
    windows), blurred a little like an out-of-focus background."""
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # linear gradient
        a, b = _color(rng), _color(rng)
        ang = rng.uniform(0, 2 * np.pi)
        p = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)
        p = (p - p.min()) / max(np.ptp(p), 1e-6)
        img = a + (b - a) * p[..., None]
    elif kind == 1:  # radial gradient (a lamp or window behind)
        a, b = _color(rng, 120), _color(rng, 0, 140)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (0.8 * max(h, w))
        img = a + (b - a) * np.clip(r, 0, 1)[..., None]
    elif kind == 2:  # smooth colour noise
        small = rng.uniform(0, 255, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)).astype(np.float32)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    else:  # random shapes over a flat wall
        img = np.empty((h, w, 3), np.float32)
        img[:] = _color(rng, 40, 230)
        for _ in range(int(rng.integers(3, 10))):
            c = tuple(float(x) for x in _color(rng))
            if rng.random() < 0.5:
                p1 = (int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h)))
                p2 = (p1[0] + int(rng.integers(w // 8, w // 2)), p1[1] + int(rng.integers(h // 8, h // 2)))
                cv2.rectangle(img, p1, p2, c, -1)
            else:
                cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                           int(rng.integers(max(h, w) // 20, max(h, w) // 4)), c, -1)
    img = img + rng.normal(0, 4, (h, w, 1)).astype(np.float32)  # texture
    sigma = float(rng.uniform(1.0, 4.0)) * max(h, w) / 224
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_sh(rng: np.random.Generator, ambient: tuple[float, float] = (1.8, 2.6)) -> np.ndarray:
    """(9, 3) DECA SH lighting: ambient + a directional key light (random direction, mostly from the front and
    above) + weak second-order terms, with a mild colour tint."""
    sh = np.zeros((9, 3), np.float32)
    tint = np.clip(1.0 + rng.normal(0, 0.06, 3), 0.85, 1.15)
    sh[0] = rng.uniform(*ambient) * tint
    d = rng.normal(0, 1, 3)
    d[2] = abs(d[2]) + 0.5  # towards the viewer
    d[1] = abs(d[1]) * 0.7  # from above
    d /= np.linalg.norm(d)
    strength = rng.uniform(0.2, 0.7)
    sh[1:4] = (strength * d)[:, None] * tint[None]  # order x, y, z
    sh[4:9] = rng.normal(0, 0.06, (5, 1)) * tint[None]
    return sh


def studio_sh() -> np.ndarray:
    """(9, 3) the nearly uniform illumination of a capture dome (Multiface)."""
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 2.3
    sh[2] = 0.15  # slightly from above
    sh[3] = 0.2
    return sh


def draw_head_silhouette(img: np.ndarray, center: tuple[float, float], face_px: float, roll: float,
                         hair: np.ndarray, shirt: np.ndarray, skin: np.ndarray,
                         hair_texture: np.ndarray | None = None) -> np.ndarray:
    """Paint hair/head, neck and shoulders behind the face (the face mesh covers only the face): ``center`` is the
    projected head centre (px), ``face_px`` the face width in pixels, ``roll`` the head roll (rad).
    ``hair_texture`` (H, W, 3): the hair's pixels instead of the flat ``hair`` colour (the ``real`` style)."""
    out = img.copy()
    cx, cy = center
    deg = float(np.rad2deg(roll))
    # shoulders and shirt
    sh_y = cy + 1.25 * face_px
    cv2.ellipse(out, (int(cx), int(sh_y + 0.9 * face_px)), (int(1.6 * face_px), int(1.0 * face_px)), 0, 180, 360,
                tuple(int(c) for c in shirt), -1, cv2.LINE_AA)
    cv2.rectangle(out, (int(cx - 1.6 * face_px), int(sh_y + 0.9 * face_px)), (int(cx + 1.6 * face_px), img.shape[0]),
                  tuple(int(c) for c in shirt), -1)
    # neck (skin, darker: it is in the shadow of the chin)
    neck = tuple(int(c * 0.7) for c in skin)
    cv2.rectangle(out, (int(cx - 0.33 * face_px), int(cy + 0.2 * face_px)),
                  (int(cx + 0.33 * face_px), int(sh_y + 0.3 * face_px)), neck, -1)
    # head behind the face mesh (skin; the mesh covers the front of the face only), ears, then hair on top
    head_c = (int(cx), int(cy - 0.1 * face_px))
    axes = (int(0.56 * face_px), int(0.74 * face_px))
    cv2.ellipse(out, head_c, axes, deg, 0, 360, tuple(int(c * 0.8) for c in skin), -1, cv2.LINE_AA)
    for side in (-1, 1):
        ex = cx + side * 0.53 * face_px * np.cos(roll)
        ey = cy + 0.02 * face_px + side * 0.53 * face_px * np.sin(roll)
        cv2.ellipse(out, (int(ex), int(ey)), (int(0.08 * face_px), int(0.16 * face_px)), deg, 0, 360,
                    tuple(int(c * 0.85) for c in skin), -1, cv2.LINE_AA)
    hair_axes = (int(0.62 * face_px), int(0.8 * face_px))
    if hair_texture is None:
        cv2.ellipse(out, (int(cx), int(cy - 0.18 * face_px)), hair_axes, deg, 180, 360, tuple(int(c) for c in hair),
                    -1, cv2.LINE_AA)
        return out
    mask = np.zeros(out.shape[:2], np.float32)
    cv2.ellipse(mask, (int(cx), int(cy - 0.18 * face_px)), hair_axes, deg, 180, 360, 1.0, -1, cv2.LINE_AA)
    blended = out.astype(np.float32) * (1 - mask[..., None]) + hair_texture * mask[..., None]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def add_sensor_noise(rng: np.random.Generator, frames: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian sensor noise (sigma in 8-bit levels)."""
    if sigma <= 0:
        return frames
    noisy = frames.astype(np.float32) + rng.normal(0, sigma, frames.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)

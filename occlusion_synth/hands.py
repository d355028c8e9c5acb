"""Hand images used as occluders.

Two sources share one small interface (`HandSource`):

- `ProceduralHandSource` draws a dorsal view of a hand from capsules (three phalanges per finger, a two-segment
  thumb, a rounded palm and a wrist stub) with natural proportions. Shading comes from a height field built from
  the same capsules (Lambert + a little specular + ambient occlusion in the valleys between fingers), plus
  knuckle creases, nails and a faint skin texture. No assets are needed, so this is the default.
- `HandFolderSource` loads RGBA cut-outs (PNG with an alpha channel), e.g. 11k Hands with their masks or the
  public-domain hand SVGs of Debian's `openclipart-svg` rendered with `rsvg-convert` (`render_svg_hands`).

Every hand image follows one convention: `HandImage.rgba (h, w, 4)` float32 in [0, 1] with *straight* alpha,
and `axis` is the unit vector (image coords, y down) from the wrist towards the fingers. Colours of fully
transparent pixels are "bled" from the nearest opaque ones so bilinear warping never pulls dark fringes in.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

#: The procedural hand poses.
HandPose = Literal["open", "flat", "relaxed", "point", "peace", "fist"]
POSES: tuple[str, ...] = typing.get_args(HandPose)


@dataclass
class HandImage:
    """An RGBA hand cut-out.

    rgba: (h, w, 4) float32 in [0, 1], straight (not premultiplied) alpha.
    axis: (2,) unit vector from wrist to fingertips in image coords (x right, y down).
    anchor: (2,) pixel coords (x, y) of the alpha-weighted centroid; placement puts this point on the face.
    length: extent of the opaque hand along `axis` in pixels (used to scale the hand to the face).
    """

    rgba: np.ndarray
    axis: np.ndarray
    anchor: np.ndarray
    length: float
    spec: dict[str, Any] = field(default_factory=dict)


class HandSource(Protocol):
    """What `occlude_sequence` needs from a hand source."""

    def sample(self, rng: np.random.Generator, target_length: float | None = None) -> HandImage:
        """Draw one hand; `HandImage.spec` must let `from_spec` rebuild it exactly. `target_length` (pixels) is
        a hint of the hand length needed in the frame (a source may draw smaller hands, which is cheaper)."""

    def from_spec(self, spec: dict[str, Any]) -> HandImage:
        """Rebuild the hand described by `spec` (as stored in the occlusion params)."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the source (stored in the params)."""


# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------


def bleed_colors(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Fill the colour of (nearly) transparent pixels with nearby opaque colours.

    rgb (h, w, 3) float32, alpha (h, w) float32 -> (h, w, 3) float32. Opaque pixels keep their colour; the rest
    get an alpha-weighted blur (normalised convolution) so that warps with bilinear filtering blend hand colour,
    not black, at the soft edge.
    """
    w = alpha.astype(np.float32)
    fill = rgb.copy()
    # Two scales: the small one follows the edge closely, the large one reaches pixels far from the hand.
    for sigma in (8.0, 2.0):
        num = cv2.GaussianBlur(rgb * w[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(w, (0, 0), sigma)[..., None]
        est = num / np.maximum(den, 1e-6)
        fill = np.where(den > 1e-4, est, fill)
    k = np.clip(w, 0.0, 1.0)[..., None]
    # Opaque pixels keep their own colour exactly; semi-transparent ones keep theirs too (straight alpha).
    return np.where(k > 0.0, rgb, fill).astype(np.float32)


def finalize_hand(rgba: np.ndarray, axis: np.ndarray, spec: dict[str, Any], margin: int = 4) -> HandImage:
    """Crop to the alpha bounding box (+margin), bleed colours, compute anchor and length along `axis`."""
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha > 1e-3)
    if ys.size == 0:
        raise ValueError(f"hand image has an empty alpha channel ({spec})")
    h, w = alpha.shape
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)
    rgba = np.ascontiguousarray(rgba[y0:y1, x0:x1]).astype(np.float32)
    rgba[..., :3] = bleed_colors(rgba[..., :3], rgba[..., 3])
    a = rgba[..., 3]
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]].astype(np.float32)
    total = float(a.sum())
    # Pixel centres are at +0.5 (ARCHITECTURE: pixel column c has centre u = c + 0.5).
    anchor = np.array([(a * (xx + 0.5)).sum() / total, (a * (yy + 0.5)).sum() / total], dtype=np.float64)
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    opaque = a > 0.5
    proj = (xx[opaque] + 0.5) * axis[0] + (yy[opaque] + 0.5) * axis[1]
    length = float(proj.max() - proj.min()) if proj.size else float(max(a.shape))
    return HandImage(rgba=rgba, axis=axis, anchor=anchor, length=length, spec=dict(spec))


# --------------------------------------------------------------------------------------------------------------
# Procedural hand
# --------------------------------------------------------------------------------------------------------------

# Right hand, back (dorsal) view, fingers up: the thumb is on the image's left. Units: palm width at the knuckles
# = 1. Finger order: index, middle, ring, little. Lengths follow typical adult ratios (middle finger ~ 0.85 of the
# palm length, little ~ 0.65; phalanges ~ 0.45 / 0.30 / 0.25 of the finger).
_FINGER_X = np.array([-0.345, -0.115, 0.115, 0.335])
_FINGER_BASE_Y = np.array([-0.50, -0.53, -0.51, -0.45])
_FINGER_LEN = np.array([0.80, 0.89, 0.83, 0.65])
_FINGER_R = np.array([0.112, 0.118, 0.110, 0.094])
_PHALANX = np.array([0.45, 0.30, 0.25])


@dataclass(frozen=True)
class _Pose:
    spread_deg: tuple[float, float, float, float]  # finger angles from vertical, negative = towards the thumb
    flex_deg: tuple[float, float, float, float]  # flexion of the proximal joint (foreshortens the finger)
    thumb_deg: float  # thumb direction from vertical (negative = away from the palm, to the left)
    thumb_over: bool = False  # thumb folded across the curled fingers (fist, point, peace)


_POSES: dict[str, _Pose] = {
    "open": _Pose((-13.0, -3.0, 7.0, 17.0), (0, 0, 0, 0), -58.0),
    "flat": _Pose((-3.0, 0.0, 2.5, 6.0), (0, 0, 0, 0), -22.0),
    "relaxed": _Pose((-8.0, -2.0, 4.0, 10.0), (28, 22, 30, 38), -38.0),
    "point": _Pose((-4.0, 0.0, 0.0, 0.0), (0, 95, 95, 95), 62.0, True),
    "peace": _Pose((-13.0, 6.0, 0.0, 0.0), (0, 0, 95, 95), 66.0, True),
    "fist": _Pose((0.0, 0.0, 0.0, 0.0), (95, 95, 95, 95), 70.0, True),
}


def _rot(deg: float) -> np.ndarray:
    """Direction of a finger at `deg` from vertical-up (image y down), as a unit vector (x, y)."""
    t = np.deg2rad(deg)
    return np.array([np.sin(t), -np.cos(t)])


class _Canvas:
    """Supersampled drawing surface in hand units; accumulates a height field by max-union of primitives."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], px_per_unit: float):
        self.x0, self.y0 = x_range[0], y_range[0]
        self.ppu = px_per_unit
        self.w = int(np.ceil((x_range[1] - x_range[0]) * px_per_unit))
        self.h = int(np.ceil((y_range[1] - y_range[0]) * px_per_unit))
        self.height = np.zeros((self.h, self.w), np.float32)

    def to_px(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p) - [self.x0, self.y0]) * self.ppu

    def _window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Pixel window covering the hand-unit box [lo, hi], with the hand-unit coords of its pixel centres."""
        c0 = np.clip(np.floor(self.to_px(lo)).astype(int), 0, [self.w, self.h])
        c1 = np.clip(np.ceil(self.to_px(hi)).astype(int) + 1, 0, [self.w, self.h])
        xs = (np.arange(c0[0], c1[0]) + 0.5) / self.ppu + self.x0
        ys = (np.arange(c0[1], c1[1]) + 0.5) / self.ppu + self.y0
        return slice(c0[1], c1[1]), slice(c0[0], c1[0]), xs[None, :], ys[:, None]

    def capsule(self, a: np.ndarray, b: np.ndarray, ra: float, rb: float, flat: float = 0.75) -> None:
        """Tapered capsule from a to b; height = flat * r * sqrt(1 - (d/r)^2): an elliptic cross-section
        (fingers are wider than they are thick)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        r = max(ra, rb)
        sy, sx, X, Y = self._window(np.minimum(a, b) - r, np.maximum(a, b) + r)
        ab = b - a
        t = np.clip(((X - a[0]) * ab[0] + (Y - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0.0, 1.0)
        d2 = (X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2
        rr = ra + t * (rb - ra)
        h = flat * rr * np.sqrt(np.clip(1.0 - d2 / rr**2, 0.0, None))
        np.maximum(self.height[sy, sx], h.astype(np.float32), out=self.height[sy, sx])

    def slab(self, poly: np.ndarray, thickness: float, edge: float) -> None:
        """Flat-topped region with rounded edges (the palm): height rises over `edge` units from the border."""
        mask = np.zeros((self.h, self.w), np.uint8)
        pts = np.round(self.to_px(poly) * 16).astype(np.int32)  # 4 fractional bits for a precise outline
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5) / self.ppu
        u = np.clip(dist / edge, 0.0, 1.0)
        h = thickness * np.sqrt(1.0 - (1.0 - u) ** 2)
        np.maximum(self.height, h.astype(np.float32), out=self.height)

    def bump(self, c: np.ndarray, sigma: float, amp: float) -> None:
        """Additive Gaussian bump (knuckles) where the surface already exists."""
        sy, sx, X, Y = self._window(np.asarray(c) - 3 * sigma, np.asarray(c) + 3 * sigma)
        g = amp * np.exp(-((X - c[0]) ** 2 + (Y - c[1]) ** 2) / (2 * sigma**2))
        region = self.height[sy, sx]
        region += np.where(region > 0, g, 0.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return n / (n.std() + 1e-6)


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    """Random skin albedo (RGB in [0, 1]) between light and dark tones with a little hue variation."""
    light = np.array([0.93, 0.76, 0.66])
    dark = np.array([0.42, 0.27, 0.19])
    t = rng.uniform(0.0, 1.0)
    base = light * (1 - t) + dark * t
    return np.clip(base * rng.uniform(0.95, 1.05, 3), 0.0, 1.0)


def procedural_hand(pose: str = "open", size: int = 256, seed: int = 0, mirror: bool = False) -> HandImage:
    """Draw a hand (dorsal view, fingers up) with `size` pixels from wrist stub to fingertips.

    pose: one of `POSES`. seed: proportions jitter, skin tone and texture. mirror: left hand instead of right.
    Returns a `HandImage` (rgba float32 (h, w, 4), axis (0, -1)).
    """
    if pose not in _POSES:
        raise ValueError(f"unknown hand pose {pose!r}; expected one of {POSES}")
    rng = np.random.default_rng(seed)
    p = _POSES[pose]
    ss = 2  # supersampling factor: the height field is drawn at 2x and area-downsampled (anti-aliasing)
    y_range = (-1.55, 1.15)
    ppu = ss * size / (y_range[1] - y_range[0])
    cv_ = _Canvas((-1.05, 0.85), y_range, ppu)

    # Per-hand proportion jitter (a few percent): not every hand is the same hand.
    flen = _FINGER_LEN * rng.uniform(0.94, 1.06) * rng.uniform(0.97, 1.03, 4)
    frad = _FINGER_R * rng.uniform(0.92, 1.08)
    spread = np.array(p.spread_deg) + rng.normal(0.0, 1.5, 4)
    flex = np.array(p.flex_deg, float)

    # Palm + wrist stub in one outline (no seam): rounded trapezoid, knuckle line at the top, narrowing to the
    # wrist, then the forearm leaving the image at the bottom.
    palm = np.array([[-0.47, -0.52], [-0.20, -0.58], [0.20, -0.57], [0.45, -0.47], [0.43, 0.22],
                     [0.34, 0.50], [0.36, 1.40], [-0.36, 1.40], [-0.34, 0.50], [-0.45, 0.20]])
    cv_.slab(palm, thickness=0.085, edge=0.14)

    creases: list[tuple[np.ndarray, np.ndarray, float]] = []  # (centre, finger direction, half width)
    nails: list[tuple[np.ndarray, np.ndarray, float, float]] = []  # (centre, direction, length, half width)
    for i in range(4):
        d = _rot(spread[i])
        base = np.array([_FINGER_X[i], _FINGER_BASE_Y[i]])
        start = base + d * 0.12  # start inside the palm so the union is seamless
        cv_.capsule(base + np.array([0.0, 0.10]), start, frad[i] * 1.05, frad[i] * 1.05)
        if flex[i] >= 90:
            # Curled finger seen from the back: only the proximal phalanx shows, pointing at the viewer, as a
            # short rounded knuckle block.
            tip = start + d * 0.16
            cv_.capsule(start, tip, frad[i] * 1.08, frad[i] * 1.02)
            cv_.bump(start + d * 0.05, frad[i] * 0.6, 0.025)
            continue
        pt, r = start, frad[i]
        ang = 0.0
        for k in range(3):
            ang = min(ang + flex[i] * (1.0 if k == 0 else 0.8), 85.0)
            seg = flen[i] * _PHALANX[k] * np.cos(np.deg2rad(ang))  # flexion foreshortens the segment
            r_next = r * (0.90 if k < 2 else 0.86)
            nxt = pt + d * seg
            cv_.capsule(pt, nxt, r, r_next)
            if k < 2:
                creases.append((nxt, d, r_next))
            else:
                nail_len = max(seg * 0.62, 0.06)
                nails.append((nxt - d * (r_next * 0.25 + nail_len * 0.5), d, nail_len, r_next * 0.72))
            pt, r = nxt, r_next
        cv_.bump(start - d * 0.02, frad[i] * 0.7, 0.03)  # knuckle

    # Thumb: thenar bulge inside the palm, then metacarpal + two phalanges.
    td = _rot(p.thumb_deg + rng.normal(0.0, 3.0))
    tbase = np.array([-0.40, 0.20])
    cv_.capsule([-0.18, 0.32], tbase, 0.20, 0.17, flat=0.5)
    if p.thumb_over:
        # Folded across the curled fingers: shorter apparent length, lies over the knuckle blocks.
        t1 = tbase + _rot(p.thumb_deg - 35.0) * 0.30
        t2 = t1 + td * 0.34
        cv_.capsule(tbase, t1, 0.16, 0.135)
        cv_.capsule(t1, t2, 0.135, 0.11)
        creases.append((t1, td, 0.135))
        nails.append((t2 - td * 0.11, td, 0.12, 0.075))
    else:
        t1 = tbase + td * 0.40
        t2 = t1 + _rot(p.thumb_deg + 10.0) * 0.30
        cv_.capsule(tbase, t1, 0.15, 0.125)
        cv_.capsule(t1, t2, 0.125, 0.105)
        creases.append((t1, td, 0.125))
        nails.append((t2 - _rot(p.thumb_deg + 10.0) * 0.12, _rot(p.thumb_deg + 10.0), 0.13, 0.07))

    # Tendons on the back of the hand: faint ridges from each knuckle towards the wrist.
    hgt = cv_.height
    H, W = hgt.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    X = (xx + 0.5) / cv_.ppu + cv_.x0
    Y = (yy + 0.5) / cv_.ppu + cv_.y0
    # Smooth window along y (no step edges): tendons fade in below the knuckles and out above the wrist.
    palm_zone = np.clip((Y + 0.45) / 0.15, 0, 1) * np.clip((0.35 - Y) / 0.25, 0, 1)
    for i in range(4):
        xline = _FINGER_X[i] * (1.0 - 0.45 * (Y + 0.45) / 0.8)
        ridge = 0.004 * np.exp(-((X - xline) ** 2) / (2 * 0.04**2))
        hgt += np.where(hgt > 0.05, palm_zone * ridge, 0.0).astype(np.float32)

    # Soft alpha at full resolution, then area-downsample everything (anti-aliasing).
    inside = (hgt > 0).astype(np.float32)
    # Fade the forearm out at the bottom so the cut is not a hard edge.
    fade = np.clip((1.12 - Y) / 0.25, 0.0, 1.0)
    alpha_hi = inside * fade

    # Shading from the height field (in pixel units so slopes are geometric).
    hp = cv2.GaussianBlur(hgt * cv_.ppu, (0, 0), 1.0)
    gx = cv2.Sobel(hp, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(hp, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    n = np.stack([-gx, -gy, np.ones_like(gx)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    light = np.array([-0.45, -0.55, 0.70])
    light /= np.linalg.norm(light)
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    diffuse = np.clip(n @ light, 0.0, 1.0)
    spec = np.clip(n @ half, 0.0, 1.0) ** 24
    # Ambient occlusion: valleys (between fingers, palm/finger junctions) are lower than their neighbourhood.
    blur = cv2.GaussianBlur(hgt, (0, 0), 0.05 * cv_.ppu)
    ao = np.clip(1.0 - 6.0 * np.clip(blur - hgt, 0.0, None) / 0.11, 0.45, 1.0)

    skin = _skin_tone(rng)
    texture = 1.0 + 0.012 * _smooth_noise(rng, (H, W), 1.5) + 0.03 * _smooth_noise(rng, (H, W), 12.0)
    shadow_tint = np.array([1.0, 0.78, 0.72])  # subsurface scattering keeps shadows of skin reddish
    lit = 0.42 + 0.70 * diffuse
    albedo = skin[None, None, :] * texture[..., None]
    rgb = albedo * (lit[..., None] * (shadow_tint + (1.0 - shadow_tint) * diffuse[..., None]))
    rgb = rgb * ao[..., None] + 0.10 * spec[..., None]

    # Knuckle creases: 2-3 thin dark arcs across each finger joint.
    crease_layer = np.zeros((H, W), np.float32)
    for c, d, r in creases:
        perp = np.array([-d[1], d[0]])
        for k, off in enumerate((-0.018, 0.0, 0.02)):
            cc = c + d * off
            a = cv_.to_px(cc - perp * r * 0.65)
            b = cv_.to_px(cc + perp * r * 0.65)
            mid = cv_.to_px(cc + d * 0.012)
            pts = np.array([a, mid, b]) * 16
            cv2.polylines(crease_layer, [np.round(pts).astype(np.int32)], False, 0.55 if k == 1 else 0.3,
                          thickness=max(1, int(0.008 * cv_.ppu)), lineType=cv2.LINE_AA, shift=4)
    crease_layer = cv2.GaussianBlur(crease_layer, (0, 0), 0.8)
    # Creases darken green/blue more than red: skin folds look reddish-brown, not grey.
    rgb *= 1.0 - crease_layer[..., None] * np.array([0.40, 0.48, 0.52])

    # Nails: a lighter, pinkish rounded rectangle with a thin darker rim and a highlight.
    nail_layer = np.zeros((H, W), np.float32)
    rim_layer = np.zeros((H, W), np.float32)
    for c, d, length, hw in nails:
        ang = float(np.degrees(np.arctan2(d[1], d[0])))
        center = tuple(float(v) for v in cv_.to_px(c))
        axes = (float(length * 0.5 * cv_.ppu), float(hw * cv_.ppu))
        cv2.ellipse(nail_layer, (center, (2 * axes[0], 2 * axes[1]), ang), 1.0, -1, cv2.LINE_AA)
        cv2.ellipse(rim_layer, (center, (2 * axes[0], 2 * axes[1]), ang), 1.0, max(1, int(0.006 * cv_.ppu)),
                    cv2.LINE_AA)
    nail_layer = cv2.GaussianBlur(nail_layer, (0, 0), 0.8) * inside
    rim_layer = cv2.GaussianBlur(rim_layer, (0, 0), 0.8) * inside
    nail_col = np.clip(skin * 0.75 + np.array([0.95, 0.80, 0.78]) * 0.25, 0, 1) * (0.50 + 0.62 * diffuse[..., None])
    nail_col = nail_col + 0.10 * spec[..., None] ** 0.5
    rgb = rgb * (1 - nail_layer[..., None]) + nail_col * nail_layer[..., None]
    rgb *= (1.0 - 0.25 * rim_layer)[..., None]

    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    out_h, out_w = H // ss, W // ss
    rgb = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha_hi, (out_w, out_h), interpolation=cv2.INTER_AREA)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6)  # soft alpha edge (~1 px)
    rgba = np.concatenate([rgb, alpha[..., None]], -1)
    axis = np.array([0.0, -1.0])
    if mirror:
        rgba = rgba[:, ::-1].copy()
    spec_d = {"kind": "procedural", "pose": pose, "size": int(size), "seed": int(seed), "mirror": bool(mirror)}
    return finalize_hand(rgba, axis, spec_d)


@dataclass
class ProceduralHandSource:
    """Default hand source: procedurally drawn hands (no assets). `size` = hand length in pixels before scaling."""

    poses: tuple[str, ...] = POSES
    size: int = 256

    def __post_init__(self) -> None:
        bad = [p for p in self.poses if p not in _POSES]
        if not self.poses or bad:
            raise ValueError(f"procedural hand poses must be a non-empty subset of {POSES}, got {self.poses}")

    def sample(self, rng: np.random.Generator, target_length: float | None = None) -> HandImage:
        pose = str(self.poses[int(rng.integers(len(self.poses)))])
        seed, mirror = int(rng.integers(2**31)), bool(rng.integers(2))
        # Drawing at about the size needed in the frame is cheaper than drawing big and downscaling, and the
        # drawing itself is anti-aliased (2x supersampled).
        size = self.size if target_length is None else int(np.clip(round(target_length), 48, self.size))
        return procedural_hand(pose, size, seed=seed, mirror=mirror)

    def from_spec(self, spec: dict[str, Any]) -> HandImage:
        if spec.get("kind") != "procedural":
            raise ValueError(f"ProceduralHandSource cannot rebuild a hand of kind {spec.get('kind')!r}")
        return procedural_hand(spec["pose"], int(spec["size"]), int(spec["seed"]), bool(spec["mirror"]))

    def describe(self) -> dict[str, Any]:
        return {"kind": "procedural", "poses": list(self.poses), "size": int(self.size)}


# --------------------------------------------------------------------------------------------------------------
# Folder of RGBA cut-outs
# --------------------------------------------------------------------------------------------------------------

_IMAGE_EXTS = {".png", ".webp", ".tif", ".tiff"}


def _estimate_axis(alpha: np.ndarray) -> np.ndarray:
    """Guess the wrist -> fingers direction of a cut-out from its alpha mask.

    The principal axis of the mask gives the line; the sign is chosen so that the fingers are at the end where
    the shape is less convex (gaps between fingers make the convex hull much larger than the mask there).
    """
    ys, xs = np.nonzero(alpha > 0.5)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c = pts.mean(0)
    _, vecs = np.linalg.eigh(np.cov((pts - c).T))
    ax = vecs[:, -1]
    proj = (pts - c) @ ax
    m = (alpha > 0.5).astype(np.uint8)
    defect = []
    for sign in (1.0, -1.0):
        sel = pts[sign * proj > 0].astype(np.int32)
        if len(sel) < 3:
            defect.append(0.0)
            continue
        hull = cv2.convexHull(sel)
        hull_mask = np.zeros_like(m)
        cv2.fillConvexPoly(hull_mask, hull, 1)
        defect.append(float((hull_mask & (1 - m)).sum()) / max(len(sel), 1))
    return ax if defect[0] >= defect[1] else -ax


@dataclass
class HandFolderSource:
    """Hands from a folder of RGBA cut-outs (PNG/WebP/TIFF with an alpha channel).

    orientation: "up" means the fingers point up in every image (the usual convention for cut-outs);
    "auto" estimates the direction per image from its alpha mask (`_estimate_axis`).
    max_side: images larger than this are downscaled once at load time (keeps warps cheap).
    """

    folder: str
    orientation: str = "up"
    max_side: int = 384
    _cache: dict[str, HandImage] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        root = Path(self.folder)
        if not root.is_dir():
            raise ValueError(f"hand folder {self.folder!r} does not exist or is not a directory")
        if self.orientation not in ("up", "auto"):
            raise ValueError(f"orientation must be 'up' or 'auto', got {self.orientation!r}")
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTS)
        if not files:
            raise ValueError(f"hand folder {self.folder!r} contains no RGBA images ({sorted(_IMAGE_EXTS)})")
        self.files = [p.name for p in files]
        # Check every file now: a non-RGBA file found mid-corpus would waste a long run.
        for name in self.files:
            self._load(name)

    def _load(self, name: str) -> HandImage:
        if name in self._cache:
            return self._cache[name]
        path = Path(self.folder) / name
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot read hand image {path}")
        if img.ndim != 3 or img.shape[2] != 4:
            ch = 1 if img.ndim == 2 else img.shape[2]
            raise ValueError(f"hand image {path} is not RGBA (has {ch} channel(s)); cut-outs need an alpha channel")
        scale = 255.0 if img.dtype == np.uint8 else 65535.0 if img.dtype == np.uint16 else 1.0
        rgba = img.astype(np.float32) / scale
        rgba = rgba[..., [2, 1, 0, 3]]  # OpenCV reads BGRA
        if rgba[..., 3].max() <= 0.5:
            raise ValueError(f"hand image {path} has an empty alpha channel")
        side = max(rgba.shape[:2])
        if side > self.max_side:
            f = self.max_side / side
            rgba = cv2.resize(rgba, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        axis = _estimate_axis(rgba[..., 3]) if self.orientation == "auto" else np.array([0.0, -1.0])
        sha = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
        hand = finalize_hand(rgba, axis, {"kind": "folder", "folder": str(Path(self.folder).resolve()),
                                          "file": name, "sha1": sha, "orientation": self.orientation})
        self._cache[name] = hand
        return hand

    def sample(self, rng: np.random.Generator, target_length: float | None = None) -> HandImage:
        return self._load(self.files[int(rng.integers(len(self.files)))])

    def from_spec(self, spec: dict[str, Any]) -> HandImage:
        if spec.get("kind") != "folder":
            raise ValueError(f"HandFolderSource cannot rebuild a hand of kind {spec.get('kind')!r}")
        if spec["file"] not in self.files:
            raise ValueError(f"hand image {spec['file']!r} is not in folder {self.folder!r}")
        hand = self._load(spec["file"])
        if spec.get("sha1") and spec["sha1"] != hand.spec["sha1"]:
            raise ValueError(f"hand image {spec['file']!r} changed since the params were written (sha1 differs)")
        return hand

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "folder": str(Path(self.folder).resolve()), "orientation": self.orientation,
                "max_side": int(self.max_side), "n_files": len(self.files)}


def resize_hand(hand: HandImage, factor: float) -> HandImage:
    """Area-resample a hand by `factor` (< 1: anti-aliased downscale before warping). Anchor and length are
    recomputed from the resampled alpha; spec is kept."""
    h, w = hand.rgba.shape[:2]
    size = (max(2, int(round(w * factor))), max(2, int(round(h * factor))))
    rgba = cv2.resize(hand.rgba, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    return finalize_hand(rgba, hand.axis, hand.spec, margin=2)


def source_from_description(desc: dict[str, Any]) -> HandSource:
    """Rebuild a hand source from `HandSource.describe()` output (used by `replay`)."""
    if desc.get("kind") == "procedural":
        return ProceduralHandSource(tuple(desc["poses"]), int(desc["size"]))
    if desc.get("kind") == "folder":
        return HandFolderSource(desc["folder"], desc.get("orientation", "up"), int(desc.get("max_side", 384)))
    raise ValueError(f"unknown hand source kind {desc.get('kind')!r}")


def render_svg_hands(svg_paths: list[str | Path], out_dir: str | Path, height: int = 320) -> list[Path]:
    """Render SVG hands (e.g. openclipart's `people/bodypart/hand_*.svg`) to RGBA PNGs with `rsvg-convert`.

    Returns the written PNG paths. Raises `RuntimeError` when `rsvg-convert` (apt `librsvg2-bin`) is missing.
    """
    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise RuntimeError("rsvg-convert not found: install the apt package librsvg2-bin")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for svg in svg_paths:
        svg = Path(svg)
        png = out / (svg.stem + ".png")
        subprocess.run([exe, "-h", str(height), "-f", "png", "-o", str(png), str(svg)], check=True,
                       capture_output=True, timeout=60)
        written.append(png)
    return written

"""Where the hand goes on the face, and how it is composited.

Placement follows the face-occlusion generators (Voo et al. 2022, "Delving into high-quality synthetic face
occlusion segmentation datasets", the method AVFace cites): the occluder is scaled relative to the face box,
its centre is drawn inside the face region, it is rotated so the fingers point at the face centre, and it is
alpha-blended with an eroded and blurred mask (erosion removes the cut-out's fringe, the blur hides the seam).

Coordinates: pixel coords with the centre of pixel (row r, column c) at (x, y) = (c + 0.5, r + 0.5), as in
docs/ARCHITECTURE.md. Boxes are xyxy in pixel coords. Angles are in degrees in image coords (x right, y down),
measured with atan2(dy, dx).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .hands import HandImage


@dataclass
class PlacementConfig:
    """Random placement of the hand on the first frame.

    scale_min, scale_max: hand length / face size (face size = sqrt(box w * box h)).
    radius_min, radius_max: distance of the hand centroid from the face centre, as a fraction of the half box
      (elliptic: 1 = on the box-inscribed ellipse). Keeping radius_min > 0 makes "towards the centre" defined.
    angle_jitter_deg: std of the deviation of the finger direction from exactly "towards the face centre".
    """

    scale_min: float = 0.75
    scale_max: float = 1.05
    radius_min: float = 0.15
    radius_max: float = 0.65
    angle_jitter_deg: float = 15.0


@dataclass
class Placement:
    """anchor: (2,) frame pixel coords of the hand centroid; direction_deg: finger direction in the frame;
    scale: frame pixels per hand-image pixel."""

    anchor: np.ndarray
    direction_deg: float
    scale: float


def box_center_size(box: np.ndarray) -> tuple[np.ndarray, float]:
    """box (4,) xyxy -> centre (2,), size sqrt(w h)."""
    box = np.asarray(box, dtype=np.float64)
    c = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    return c, float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))


def sample_placement(box: np.ndarray, hand: HandImage, cfg: PlacementConfig, rng: np.random.Generator) -> Placement:
    """Draw the first-frame placement of `hand` on the face `box` (4,) xyxy."""
    c, size = box_center_size(box)
    half = np.array([(box[2] - box[0]) / 2.0, (box[3] - box[1]) / 2.0])
    # Direction the hand comes from (face centre -> hand centroid); area-uniform radius inside the ellipse band.
    theta = rng.uniform(0.0, 2.0 * np.pi)
    r = np.sqrt(rng.uniform(cfg.radius_min**2, cfg.radius_max**2))
    anchor = c + r * half * np.array([np.cos(theta), np.sin(theta)])
    to_center = c - anchor
    direction = float(np.degrees(np.arctan2(to_center[1], to_center[0])) + rng.normal(0.0, cfg.angle_jitter_deg))
    scale = float(rng.uniform(cfg.scale_min, cfg.scale_max) * size / hand.length)
    return Placement(anchor=anchor, direction_deg=direction, scale=scale)


def hand_affine(hand: HandImage, anchor: np.ndarray, direction_deg: float, scale: float) -> np.ndarray:
    """(2, 3) float64 affine for cv2.warpAffine mapping hand-image pixel indices to frame pixel indices.

    The hand's `axis` is rotated onto `direction_deg`, it is scaled by `scale`, and its centroid lands on
    `anchor`. The -0.5 shifts convert centre-based coords to OpenCV's index coords.
    """
    phi = np.radians(direction_deg) - np.arctan2(hand.axis[1], hand.axis[0])
    cs, sn = np.cos(phi), np.sin(phi)
    A = scale * np.array([[cs, -sn], [sn, cs]])
    src = hand.anchor - 0.5
    dst = np.asarray(anchor, dtype=np.float64) - 0.5
    return np.concatenate([A, (dst - A @ src)[:, None]], axis=1)


def composite(frame: np.ndarray, hand_rgba: np.ndarray, M: np.ndarray, erode_px: int, blur_sigma: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Warp the RGBA hand into `frame` and alpha-blend it.

    frame (H, W, 3) uint8; hand_rgba (h, w, 4) float32 in [0, 1]; M (2, 3) from `hand_affine`.
    Returns (frame (H, W, 3) uint8, mask (H, W) float32 in [0, 1]) where mask is the blend weight of the hand.
    Only the bounding box of the warped hand (+ a margin for erosion/blur) is processed.
    """
    H, W = frame.shape[:2]
    h, w = hand_rgba.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ M.T
    pad = int(erode_px + np.ceil(3 * blur_sigma) + 2)
    x0 = max(int(np.floor(corners[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + pad + 1, W)
    y1 = min(int(np.ceil(corners[:, 1].max())) + pad + 1, H)
    out = frame.copy()
    mask = np.zeros((H, W), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out, mask
    Mr = M.copy()
    Mr[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(hand_rgba, Mr, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    a = warped[..., 3]
    if erode_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        a = cv2.erode(a, k)
    if blur_sigma > 0:
        a = cv2.GaussianBlur(a, (0, 0), blur_sigma)
    a = np.clip(a, 0.0, 1.0)
    roi = out[y0:y1, x0:x1].astype(np.float32)
    blended = roi + a[..., None] * (warped[..., :3] * 255.0 - roi)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1] = a
    return out, mask


def face_region_mask(shape: tuple[int, int], box: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool skin region used as the colour-transfer target.

    With 68 landmarks: their convex hull (jaw line + brows), which excludes hair and background. With a box only:
    the ellipse inscribed in the central 76% x 88% of the box (face boxes include some background at the sides).
    """
    H, W = shape
    m = np.zeros((H, W), np.uint8)
    if landmarks is not None:
        hull = cv2.convexHull(np.round(np.asarray(landmarks, np.float64) * 16).astype(np.int32))
        cv2.fillConvexPoly(m, hull, 1, lineType=cv2.LINE_8, shift=4)
    else:
        c, _ = box_center_size(box)
        axes = (0.38 * (box[2] - box[0]), 0.44 * (box[3] - box[1]))
        cv2.ellipse(m, ((float(c[0] - 0.5), float(c[1] - 0.5)), (2 * axes[0], 2 * axes[1]), 0.0), 1, -1)
    return m.astype(bool)


#: 68-point (iBUG) ids of the parts of a face that are not skin: eyes, brows, the outer lip contour
EYE_IDS = (tuple(range(36, 42)), tuple(range(42, 48)))
BROW_IDS = (tuple(range(17, 22)), tuple(range(22, 27)))
MOUTH_IDS = tuple(range(48, 60))


def skin_region_mask(shape: tuple[int, int], landmarks: np.ndarray, inset: float = 0.12, margin: float = 0.15
                     ) -> np.ndarray:
    """(H, W) bool skin of a face from its 68 landmarks (xy px): the inner face (the convex hull of the eyes,
    nose and mouth: cheeks under the eyes, nose, upper lip, the chin's top) inside the whole hull shrunk by
    `inset` inter-ocular distances, less the eyes, brows and lips grown by `margin` inter-ocular distances
    (lashes, brow hair and the lips' edge). The jaw line bounds it only through the shrunk hull: a detector's
    contour sits on the face's edge, where the background, hair or beard begins, and on a turned head its far
    side lies out on the background. Empty when the face is smaller than the margins."""
    H, W = shape
    lm = np.asarray(landmarks, np.float64)
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))

    def hull_mask(points: np.ndarray) -> np.ndarray:
        m = np.zeros((H, W), np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(np.round(points * 16).astype(np.int32)), 1, lineType=cv2.LINE_8,
                           shift=4)
        return m

    m = hull_mask(lm)
    r_in = int(round(inset * iod))
    if r_in > 0:
        m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_in + 1, 2 * r_in + 1)))
    m &= hull_mask(lm[27:68])
    parts = np.zeros((H, W), np.uint8)
    for ids in (*EYE_IDS, MOUTH_IDS):
        cv2.fillPoly(parts, [np.round(lm[list(ids)] * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    for ids in BROW_IDS:
        cv2.polylines(parts, [np.round(lm[list(ids)] * 16).astype(np.int32)], False, 1, thickness=1,
                      lineType=cv2.LINE_8, shift=4)
    r_out = max(1, int(round(margin * iod)))
    parts = cv2.dilate(parts, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_out + 1, 2 * r_out + 1)))
    return (m > 0) & (parts == 0)

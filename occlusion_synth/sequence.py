"""Occlude a face video with a moving hand (AVFace sec. 3.4): the public entry points.

    result = occlude_sequence(frames, face_boxes=boxes, seed=3)      # frames (T, H, W, 3) uint8
    result.frames (T, H, W, 3) uint8, result.masks (T, H, W) float32, result.params (json-serialisable)
    again = replay(result.params, frames)                            # identical output

Pipeline: pick a hand (procedural by default) -> recolour it from the skin of the first frame's face with
landmarks (the mean and spread of its CIELAB colours; sliced OT as an option) ->
place it on the first frame's face -> move it by a bounded random walk (following the face box) -> warp and
alpha-blend it into every frame with an eroded + blurred mask.

Randomness: one `seed` is split with `numpy.random.SeedSequence(seed).spawn(4)` into independent streams for
the hand, the colour transfer, the placement and the motion, so changing e.g. the motion config does not
change which hand is drawn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from avface.utils.boxes import extent_boxes
from avface.utils.config import dataclass_from_dict

from .color_transfer import transfer_hand_colors, transfer_lab_stats
from .hands import (
    POSES,
    HandFolderSource,
    HandImage,
    HandPose,
    HandSource,
    ProceduralHandSource,
    resize_hand,
    source_from_description,
)
from .motion import MotionConfig, Trajectory, random_trajectory
from .placement import (
    Placement,
    PlacementConfig,
    box_center_size,
    composite,
    face_region_mask,
    hand_affine,
    sample_placement,
    skin_region_mask,
)

#: 2: the colour transfer's `method`, `region` and `shading` (params of version 1 replay with sliced OT on the
#: landmark hull, what they were made with)
PARAMS_VERSION = 2
_V1_COLOR = {"method": "sliced_ot", "region": "hull"}
#: face boxes derived from landmarks reach this fraction of the landmark box height above the brows (the
#: forehead, where hands also occlude)
FOREHEAD = 0.2


@dataclass
class HandConfig:
    """source: "procedural" (default, no assets) or "folder" (RGBA cut-outs in `folder`).
    poses/size: procedural hands; orientation: "up" or "auto" for folder cut-outs."""

    source: Literal["procedural", "folder"] = "procedural"
    folder: str | None = None
    poses: list[HandPose] = field(default_factory=lambda: list(POSES))
    size: int = 256
    orientation: Literal["up", "auto"] = "up"


@dataclass
class ColorConfig:
    """Colour transfer from a frame's face to the hand.

    method: "lab_stats" (the skin's CIELAB mean and spread, the hand's shading kept: `transfer_lab_stats`) or
    "sliced_ot" (the hand's colour distribution moved onto the face's: `transfer_hand_colors`).
    region: where the face's colours are taken with landmarks: "skin" (the landmark hull shrunk from the face's
    edge, less eyes, brows and lips: `skin_region_mask`) or "hull" (the whole landmark hull). Without landmarks
    the ellipse inside the face box."""

    enabled: bool = True
    method: Literal["lab_stats", "sliced_ot"] = "lab_stats"
    region: Literal["skin", "hull"] = "skin"
    shading: float = 1.0  # lab_stats: fraction of the hand's own lightness shading kept (1 = all, 0 = flat)
    n_iter: int = 30  # sliced_ot
    n_dirs: int = 3  # sliced_ot
    bilateral: bool = True  # sliced_ot
    max_target: int = 8192  # face pixels sampled as the target distribution
    # Keep this fraction of face-region pixels closest (Mahalanobis) to the median colour: eyes, brows, hair
    # and teeth would otherwise become the hand's darkest/brightest tones (black creases, white blotches).
    skin_quantile: float = 0.9
    keep_detail: float = 0.6  # sliced_ot: fraction of the hand's fine shading detail kept (transfer_hand_colors)


@dataclass
class BlendConfig:
    """Mask erosion radius and blur sigma as fractions of the hand length in the frame (min 1 px / 0.5 px)."""

    erode_frac: float = 0.01
    blur_frac: float = 0.008


@dataclass
class OcclusionConfig:
    hand: HandConfig = field(default_factory=HandConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> OcclusionConfig:
        """Build from a (possibly partial) nested dict, e.g. `params["config"]` or an OmegaConf container.
        Unknown keys raise a ValueError (a typo should not silently fall back to a default)."""
        return dataclass_from_dict(OcclusionConfig, d)


@dataclass
class OcclusionResult:
    """frames (T, H, W, 3) uint8 occluded; masks (T, H, W) float32 in [0, 1] (blend weight of the hand);
    params: json-serialisable dict that `replay` turns back into exactly the same result."""

    frames: np.ndarray
    masks: np.ndarray
    params: dict[str, Any]


# --------------------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------------------


def _check_frames(frames: Any) -> tuple[int, int, int]:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array (T, H, W, 3) uint8, got {type(frames).__name__}")
    if frames.size == 0 or frames.ndim >= 1 and frames.shape[0] == 0:
        raise ValueError(f"empty sequence: frames has shape {frames.shape}, need at least one frame")
    if frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 1):
        raise ValueError(f"grayscale frames are not supported (shape {frames.shape}); expected (T, H, W, 3) RGB")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3) RGB, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames.shape[0], frames.shape[1], frames.shape[2]


def _resolve_boxes(face_boxes: Any, landmarks: Any, T: int, H: int, W: int) -> np.ndarray:
    if face_boxes is None and landmarks is None:
        raise ValueError("no face box: pass face_boxes (T, 4) xyxy or landmarks (T, 68, 2)")
    if face_boxes is None:
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.ndim != 3 or lm.shape[0] != T or lm.shape[2] != 2 or lm.shape[1] != 68:
            raise ValueError(f"landmarks must have shape ({T}, 68, 2), got {lm.shape}")
        if not np.isfinite(lm).all():
            bad = np.flatnonzero(~np.isfinite(lm).all(axis=(1, 2)))
            raise ValueError(f"no face box: landmarks are not finite in frames {bad.tolist()}")
        boxes = extent_boxes(lm, forehead=FOREHEAD)
    else:
        boxes = np.asarray(face_boxes, dtype=np.float64)
        if boxes.ndim == 1 and boxes.shape == (4,):
            boxes = np.broadcast_to(boxes, (T, 4)).copy()  # one static box for the whole sequence
        if boxes.shape != (T, 4):
            raise ValueError(f"face_boxes must have shape ({T}, 4) xyxy (or (4,)), got {boxes.shape}")
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        raise ValueError(f"no face box in frames {np.flatnonzero(~finite).tolist()} (NaN/inf)")
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any():
        raise ValueError(f"face box has zero or negative size in frames {np.flatnonzero(empty).tolist()} "
                         f"(expected xyxy with x2 > x1, y2 > y1)")
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= W) | (boxes[:, 1] >= H)
    if outside.any():
        raise ValueError(f"face box lies outside the image ({W}x{H}) in frames {np.flatnonzero(outside).tolist()}, "
                         f"so the occlusion mask would be outside the image")
    return boxes


# --------------------------------------------------------------------------------------------------------------
# Core
# --------------------------------------------------------------------------------------------------------------


def make_hand_source(cfg: HandConfig) -> HandSource:
    if cfg.source == "procedural":
        return ProceduralHandSource(tuple(cfg.poses), int(cfg.size))
    if cfg.source == "folder":
        if not cfg.folder:
            raise ValueError("hand.source='folder' needs hand.folder (a folder of RGBA cut-outs)")
        return HandFolderSource(cfg.folder, cfg.orientation)
    raise ValueError(f"unknown hand source {cfg.source!r}; expected 'procedural' or 'folder'")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(int(seed)).spawn(4)
    return {k: np.random.default_rng(s) for k, s in zip(("hand", "color", "placement", "motion"), children,
                                                          strict=True)}


#: fewest skin pixels the "skin" region may have before the landmark hull is used instead (a tiny face)
MIN_SKIN_PIXELS = 64


def color_region(shape: tuple[int, int], box: np.ndarray, landmarks: np.ndarray | None, cfg: ColorConfig
                 ) -> np.ndarray:
    """(H, W) bool pixels whose colours the hand takes: the skin (or hull) of the landmarks, else the box's
    ellipse."""
    if landmarks is not None and cfg.region == "skin":
        skin = skin_region_mask(shape, landmarks)
        if skin.sum() >= MIN_SKIN_PIXELS:
            return skin
    return face_region_mask(shape, box, landmarks)


def _recolor(hand: HandImage, frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, cfg: ColorConfig,
             rng: np.random.Generator) -> np.ndarray:
    """(h, w, 4) float32 hand recoloured from the face pixels of `frame` (or the original hand if disabled)."""
    if not cfg.enabled:
        return hand.rgba
    region = color_region(frame.shape[:2], box, landmarks, cfg)
    target = frame[region]
    if len(target) < 16:
        raise ValueError(f"face region has only {len(target)} pixels inside the image: cannot transfer colour")
    target = skin_colors(target, cfg.skin_quantile)
    if len(target) > cfg.max_target:
        target = target[np.sort(rng.choice(len(target), cfg.max_target, replace=False))]
    if cfg.method == "lab_stats":
        return transfer_lab_stats(hand.rgba, target.astype(np.float64) / 255.0, shading=cfg.shading)
    if cfg.method == "sliced_ot":
        return transfer_hand_colors(hand.rgba, target.astype(np.float64) / 255.0, n_iter=cfg.n_iter,
                                    n_dirs=cfg.n_dirs, rng=rng, bilateral=cfg.bilateral, keep_detail=cfg.keep_detail)
    raise ValueError(f"unknown colour transfer method {cfg.method!r}; expected 'lab_stats' or 'sliced_ot'")


def color_frame(landmarks: np.ndarray | None) -> int:
    """The frame whose face gives the hand its colour: the first with finite landmarks (frames without a
    detection are NaN), frame 0 without landmarks or when none is finite."""
    if landmarks is None:
        return 0
    ok = np.flatnonzero(np.isfinite(np.asarray(landmarks, np.float64)).all(axis=(1, 2)))
    return int(ok[0]) if len(ok) else 0


def sample_placement_rescaled(placement: Placement, resize: float) -> Placement:
    """The same placement for a hand image resampled by `resize` (frame-space size unchanged)."""
    return Placement(anchor=placement.anchor, direction_deg=placement.direction_deg, scale=placement.scale / resize)


def skin_colors(pixels: np.ndarray, quantile: float) -> np.ndarray:
    """(M, 3) uint8 face-region pixels -> the `quantile` fraction closest to the median colour (Mahalanobis
    distance with the region's covariance). quantile >= 1 keeps all."""
    if quantile >= 1.0:
        return pixels
    x = pixels.astype(np.float64)
    d = x - np.median(x, axis=0)
    cov = np.cov(x.T) + 1e-3 * np.eye(3)
    m = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    keep = m <= np.quantile(m, quantile)
    return pixels[keep]


def frame_poses(placement: Placement, traj: Trajectory, boxes: np.ndarray, cfg: MotionConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame hand pose from the first-frame placement and the trajectory.

    Returns anchors (T, 2) px, directions (T,) deg, scales (T,). The offset/retreat are in face units of the
    current frame's face when following the face, so the hand keeps its place on a moving or zooming head.
    """
    T = len(boxes)
    c0, s0 = box_center_size(boxes[0])
    rel0 = (placement.anchor - c0) / s0
    direction = placement.direction_deg + traj.angle_deg
    u = np.stack([np.cos(np.radians(direction)), np.sin(np.radians(direction))], axis=1)
    rel = rel0 + traj.offset - traj.retreat[:, None] * u  # retreat: back along the arm, away from the face
    if cfg.follow_face:
        cs = np.array([box_center_size(b)[0] for b in boxes])
        ss = np.array([box_center_size(b)[1] for b in boxes])
    else:
        cs, ss = np.broadcast_to(c0, (T, 2)), np.full(T, s0)
    anchors = cs + ss[:, None] * rel
    scales = placement.scale * (ss / s0) * np.exp(traj.log_scale)
    return anchors, direction, scales


def _render(frames: np.ndarray, hand_rgba: np.ndarray, affines: np.ndarray, erode_px: int, blur_sigma: float
            ) -> tuple[np.ndarray, np.ndarray]:
    T, H, W, _ = frames.shape
    out = np.empty_like(frames)
    masks = np.empty((T, H, W), np.float32)
    for t in range(T):
        out[t], masks[t] = composite(frames[t], hand_rgba, affines[t], erode_px, blur_sigma)
    return out, masks


def occlude_sequence(
    frames: np.ndarray,
    face_boxes: np.ndarray | None = None,
    landmarks: np.ndarray | None = None,
    config: OcclusionConfig | None = None,
    seed: int = 0,
    hand_source: HandSource | None = None,
) -> OcclusionResult:
    """Occlude the face in `frames` with a moving hand.

    frames: (T, H, W, 3) uint8 RGB. face_boxes: (T, 4) xyxy pixel boxes (or one (4,) box for all frames);
    landmarks: (T, 68, 2) pixel landmarks, used for the box when `face_boxes` is None and for the colour
    target region (the skin of the first frame with finite landmarks, see `color_region`) when given; with
    `face_boxes`, frames without a detection may be NaN. config: `OcclusionConfig`. seed: all randomness.
    hand_source: overrides `config.hand` (any object with `sample`, `from_spec`, `describe`).
    Returns `OcclusionResult(frames (T,H,W,3) u8, masks (T,H,W) f32, params)`.
    Raises ValueError on bad input (empty sequence, grayscale, no/invalid face box, box outside the image) and
    when the hand would not cover any pixel of the image on the first frame it should be visible.
    """
    config = config or OcclusionConfig()
    T, H, W = _check_frames(frames)
    boxes = _resolve_boxes(face_boxes, landmarks, T, H, W)
    if landmarks is not None and np.shape(landmarks) != (T, 68, 2):
        raise ValueError(f"landmarks must have shape ({T}, 68, 2), got {np.shape(landmarks)}")
    k = color_frame(landmarks)
    lm0 = None if landmarks is None else np.asarray(landmarks, np.float64)[k]
    if lm0 is not None and not np.isfinite(lm0).all():
        lm0 = None  # no frame with a detection: the face box's ellipse
    source = hand_source if hand_source is not None else make_hand_source(config.hand)
    rng = _streams(seed)

    _, size0 = box_center_size(boxes[0])
    hand = source.sample(rng["hand"], target_length=1.25 * config.placement.scale_max * size0)
    placement = sample_placement(boxes[0], hand, config.placement, rng["placement"])
    # Downscale the hand image once to about its size in the frame: bilinear warps with scale << 1 alias, and
    # the colour transfer is cheaper on fewer pixels.
    resize = 1.0
    if placement.scale < 0.8:
        resize = float(placement.scale * 1.25)
        hand = resize_hand(hand, resize)
        placement = sample_placement_rescaled(placement, resize)
    hand_rgba = _recolor(hand, frames[k], boxes[k], lm0, config.color, rng["color"])
    traj = random_trajectory(T, config.motion, rng["motion"])
    anchors, directions, scales = frame_poses(placement, traj, boxes, config.motion)
    affines = np.stack([hand_affine(hand, a, d, s) for a, d, s in zip(anchors, directions, scales, strict=True)])

    length0 = hand.length * placement.scale
    erode_px = max(1, int(round(config.blend.erode_frac * length0)))
    blur_sigma = max(0.5, float(config.blend.blur_frac * length0))

    out, masks = _render(frames, hand_rgba, affines, erode_px, blur_sigma)
    first = int(np.argmin(traj.retreat))  # the first frame where the hand is fully in (frame 0 unless entering)
    if masks[first].max() <= 0.0:
        raise ValueError(f"occlusion mask is entirely outside the image ({W}x{H}) at frame {first}: "
                         f"check the face boxes")

    params = {
        "version": PARAMS_VERSION,
        "seed": int(seed),
        "frame_shape": [int(T), int(H), int(W)],
        "config": dataclasses.asdict(config),
        "hand_source": source.describe(),
        "hand": hand.spec,
        "hand_resize": resize,
        "color_transfer": {"applied": bool(config.color.enabled), "from_frame": k,
                           "landmarks_region": lm0 is not None},
        "face_boxes": boxes.tolist(),
        "placement": {"anchor": placement.anchor.tolist(), "direction_deg": placement.direction_deg,
                      "scale": placement.scale},
        "trajectory": {"offset": traj.offset.tolist(), "angle_deg": traj.angle_deg.tolist(),
                       "log_scale": traj.log_scale.tolist(), "retreat": traj.retreat.tolist()},
        "anchors": anchors.tolist(),
        "directions_deg": directions.tolist(),
        "scales": scales.tolist(),
        "affines": affines.tolist(),
        "erode_px": int(erode_px),
        "blur_sigma": float(blur_sigma),
    }
    if lm0 is not None:
        params["color_landmarks"] = lm0.tolist()
    return OcclusionResult(frames=out, masks=masks, params=params)


def replay(params: dict[str, Any], frames: np.ndarray, hand_source: HandSource | None = None) -> OcclusionResult:
    """Re-apply a stored occlusion to `frames` (T, H, W, 3) uint8.

    The hand is rebuilt from `params["hand"]` (via `hand_source`, or the source described in the params), its
    colour transfer is recomputed from the frame it was taken from with the same random stream, and it is warped
    with the stored per-frame affines. With the same frames this reproduces `occlude_sequence` exactly (params
    of version 1 too: their colour transfer was sliced OT on the landmark hull).
    """
    version = params.get("version")
    if version not in (1, PARAMS_VERSION):
        raise ValueError(f"unsupported occlusion params version {version!r}")
    T, H, W = _check_frames(frames)
    if [T, H, W] != list(params["frame_shape"]):
        raise ValueError(f"frames have shape {(T, H, W)}, the params were made for {tuple(params['frame_shape'])}")
    stored = params["config"]
    if version == 1:
        stored = {**stored, "color": {**_V1_COLOR, **stored.get("color", {})}}
    config = OcclusionConfig.from_dict(stored)
    source = hand_source if hand_source is not None else source_from_description(params["hand_source"])
    hand = source.from_spec(params["hand"])
    if params["hand_resize"] != 1.0:
        hand = resize_hand(hand, float(params["hand_resize"]))
    rng = _streams(params["seed"])
    boxes = np.asarray(params["face_boxes"], np.float64)
    lm0 = np.asarray(params["color_landmarks"], np.float64) if "color_landmarks" in params else None
    k = int(params["color_transfer"].get("from_frame", 0))
    hand_rgba = _recolor(hand, frames[k], boxes[k], lm0, config.color, rng["color"])
    affines = np.asarray(params["affines"], np.float64)
    out, masks = _render(frames, hand_rgba, affines, int(params["erode_px"]), float(params["blur_sigma"]))
    return OcclusionResult(frames=out, masks=masks, params=params)

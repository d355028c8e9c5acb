"""Tests of occlusion_synth: real computation on a real photo (skimage astronaut) and on synthetic frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import ot
import pytest

from avface.utils.boxes import extent_boxes
from occlusion_synth import (
    POSES,
    HandFolderSource,
    MotionConfig,
    OcclusionConfig,
    occlude_sequence,
    procedural_hand,
    render_svg_hands,
    replay,
    sliced_ot_transfer,
    transfer_hand_colors,
    transfer_lab_stats,
)
from occlusion_synth.color_transfer import rgb_to_lab
from occlusion_synth.demo import astronaut_on_backdrop, astronaut_sequence
from occlusion_synth.hands import _estimate_axis
from occlusion_synth.motion import enter_leave_profile
from occlusion_synth.placement import box_center_size, face_region_mask, skin_region_mask
from occlusion_synth.sequence import FOREHEAD, skin_colors


@pytest.fixture(scope="module")
def astro() -> tuple[np.ndarray, np.ndarray]:
    return astronaut_sequence(num_frames=16, size=224, seed=0)


def synthetic_frames(T: int = 12, H: int = 160, W: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Static synthetic 'face': a shaded skin-coloured ellipse with dark eyes on a noisy blue background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.float32)
    img[:] = (40, 60, 120)
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy, ax, ay = W / 2, H / 2, W * 0.22, H * 0.3
    inside = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
    shade = 0.75 + 0.25 * (1 - (xx - cx + ax) / (2 * ax))
    img[inside] = (np.array([205, 150, 120]) * shade[inside, None])
    for ex in (-0.4, 0.4):
        cv2.circle(img, (int(cx + ex * ax), int(cy - 0.25 * ay)), 4, (30, 20, 20), -1)
    frames = np.clip(img[None] + rng.normal(0, 3, (T, H, W, 3)), 0, 255).astype(np.uint8)
    box = np.array([cx - ax, cy - ay, cx + ax, cy + ay])
    return frames, np.broadcast_to(box, (T, 4)).copy()


def run_count(row: np.ndarray) -> int:
    """Number of separate runs of True in a 1D boolean array."""
    r = row.astype(np.int8)
    return int((np.diff(np.concatenate([[0], r])) == 1).sum())


# ------------------------------------------------------------------------------------------------------- hands
def test_procedural_hands_look_like_hands():
    for i, pose in enumerate(POSES):
        hand = procedural_hand(pose, 200, seed=i)
        a = hand.rgba[..., 3]
        assert hand.rgba.dtype == np.float32 and hand.rgba.shape[2] == 4
        # Soft alpha edge: a band of partially transparent pixels, not a binary cut.
        assert ((a > 0.05) & (a < 0.95)).sum() > 0.05 * (a > 0.5).sum()
        # Skin shading: luminance varies inside the hand (not a flat blob).
        lum = hand.rgba[..., :3].mean(-1)[a > 0.9]
        assert lum.std() > 0.03, pose
    # Open hand: a row through the fingers crosses 4 separate fingers (the thumb is lower, to the side).
    hand = procedural_hand("open", 200, seed=0)
    m = hand.rgba[..., 3] > 0.5
    ys = np.nonzero(m.any(1))[0]
    row = ys[0] + int(0.15 * (ys[-1] - ys[0]))
    assert run_count(m[row]) == 4
    # Thumb: a row at mid height has the palm plus the separate thumb.
    row = ys[0] + int(0.50 * (ys[-1] - ys[0]))
    assert run_count(m[row]) == 2
    # Fist: no long fingers, shorter than the open hand.
    fist = procedural_hand("fist", 200, seed=0)
    assert fist.length < 0.85 * hand.length


def test_hand_folder_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="contains no RGBA images"):
        HandFolderSource(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        HandFolderSource(str(tmp_path / "missing"))
    cv2.imwrite(str(tmp_path / "rgb.png"), np.full((32, 32, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="not RGBA"):
        HandFolderSource(str(tmp_path))


def write_hand_png(path: Path, pose: str, seed: int) -> None:
    rgba = procedural_hand(pose, 160, seed=seed).rgba
    cv2.imwrite(str(path), np.clip(np.rint(rgba[..., [2, 1, 0, 3]] * 255), 0, 255).astype(np.uint8))


def test_folder_source_occlude_and_replay(tmp_path: Path, astro):
    frames, boxes = astro
    for i, pose in enumerate(("open", "point")):
        write_hand_png(tmp_path / f"hand_{i}.png", pose, i)
    src = HandFolderSource(str(tmp_path), orientation="auto")
    # Auto orientation finds the fingers pointing up in these cut-outs.
    for name in src.files:
        assert src._load(name).axis[1] < -0.9
    res = occlude_sequence(frames, face_boxes=boxes, seed=4, hand_source=src)
    assert res.params["hand"]["kind"] == "folder" and res.masks.max() > 0.99
    again = replay(json.loads(json.dumps(res.params)), frames)  # source rebuilt from the params
    assert np.array_equal(again.frames, res.frames) and np.array_equal(again.masks, res.masks)


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert (apt librsvg2-bin) not installed")
def test_openclipart_svg_hands(tmp_path: Path, astro):
    svg_dir = Path("/usr/share/openclipart/svg/people/bodypart")
    svgs = sorted(svg_dir.glob("*hand_print*.svg"))
    if not svgs:
        pytest.skip("openclipart-svg (apt) hand prints not installed")
    pngs = render_svg_hands(svgs, tmp_path / "png", height=240)
    src = HandFolderSource(str(tmp_path / "png"), orientation="auto")
    for name in src.files:
        assert src._load(name).axis[1] < -0.8  # hand prints: fingers up
    frames, boxes = astro
    res = occlude_sequence(frames, face_boxes=boxes, seed=0, hand_source=src)
    assert len(pngs) == len(src.files)
    assert res.masks[0].sum() > 200
    # The black print was recoloured towards the face: visible hand pixels are far from black.
    m = res.masks[0] > 0.95
    assert res.frames[0][m].mean() > 100


# ------------------------------------------------------------------------------------------- colour transfer
def test_sliced_ot_matches_gaussians():
    rng = np.random.default_rng(0)
    src = rng.normal([0.2, 0.5, 0.1], [0.05, 0.1, 0.02], (3000, 3))
    A = np.array([[0.1, 0.02, 0.0], [0.0, 0.05, 0.01], [0.03, 0.0, 0.08]])
    tgt = rng.normal(size=(5000, 3)) @ A + [0.7, 0.4, 0.3]
    out = sliced_ot_transfer(src, tgt, n_iter=30, n_dirs=3, rng=np.random.default_rng(1))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.mean(0), tgt.mean(0), atol=0.01)
    np.testing.assert_allclose(np.cov(out.T), np.cov(tgt.T), atol=0.002)
    # Many random directions per iteration converge too.
    out2 = sliced_ot_transfer(src, tgt, n_iter=20, n_dirs=16, rng=np.random.default_rng(1))
    np.testing.assert_allclose(out2.mean(0), tgt.mean(0), atol=0.01)


def test_sliced_wasserstein_drops_with_pot(astro):
    frames, boxes = astro
    region = face_region_mask(frames.shape[1:3], boxes[0])
    face = skin_colors(frames[0][region], 0.9).astype(np.float64) / 255.0
    hand = procedural_hand("open", 200, seed=3)
    vis = hand.rgba[..., 3] > 0.5
    before_px = hand.rgba[..., :3][vis].astype(np.float64)
    # Plain per-pixel map, bilateral-regularised map, and the default of occlude_sequence (bilateral + detail).
    for bilateral, detail in ((False, 0.0), (True, 0.0), (True, OcclusionConfig().color.keep_detail)):
        out = transfer_hand_colors(hand.rgba, face, n_iter=30, rng=np.random.default_rng(0), bilateral=bilateral,
                                   keep_detail=detail)
        after_px = out[..., :3][vis].astype(np.float64)
        sw = {k: ot.sliced_wasserstein_distance(x, face, n_projections=200, seed=0)
              for k, x in (("before", before_px), ("after", after_px))}
        print(f"bilateral={bilateral} keep_detail={detail}: SW before {sw['before']:.4f} after {sw['after']:.4f} "
              f"factor {sw['before'] / sw['after']:.1f}")
        assert sw["after"] * 3.0 <= sw["before"]
        # And the mean colour is much closer to the face's.
        assert np.linalg.norm(after_px.mean(0) - face.mean(0)) < 0.25 * np.linalg.norm(
            before_px.mean(0) - face.mean(0))


def test_occluded_hand_colours_closer_to_face(astro):
    frames, boxes = astro
    cfg = OcclusionConfig()
    cfg_off = OcclusionConfig()
    cfg_off.color.enabled = False
    on = occlude_sequence(frames, face_boxes=boxes, seed=2, config=cfg)
    off = occlude_sequence(frames, face_boxes=boxes, seed=2, config=cfg_off)
    region = face_region_mask(frames.shape[1:3], boxes[0])
    face_mean = frames[0][region].reshape(-1, 3).mean(0)
    m = on.masks[0] > 0.95
    assert np.array_equal(m, off.masks[0] > 0.95)  # same hand, same place: only the colour differs
    d_on = np.linalg.norm(on.frames[0][m].mean(0) - face_mean)
    d_off = np.linalg.norm(off.frames[0][m].mean(0) - face_mean)
    assert d_on < 0.5 * d_off


RED_STAGE = (225, 25, 30)


def backdrop_red(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) u8 -> (...) bool: the saturated red of the stage (CIELAB a* > 45), not a face's skin (a* ~ 10)."""
    return rgb_to_lab(pixels.astype(np.float32) / 255)[..., 1] > 45


def test_skin_region_is_skin_only():
    frames, lms = astronaut_on_backdrop(num_frames=1, backdrop=RED_STAGE)
    skin = skin_region_mask(frames.shape[1:3], lms[0])
    hull = face_region_mask(frames.shape[1:3], None, lms[0])
    assert 1000 < skin.sum() < 0.8 * hull.sum()
    assert not (skin & ~hull).any()
    # Eyes, brows and lips (their landmarks) are outside it; so is every pixel of the backdrop.
    for ids in (range(17, 27), range(36, 48), range(48, 68)):
        px = np.round(lms[0][list(ids)]).astype(int)
        assert not skin[px[:, 1], px[:, 0]].any(), list(ids)
    red = backdrop_red(frames[0])
    assert red.mean() > 0.3 and not (skin & red).any()


def test_lab_stats_keeps_the_hand_shading():
    frames, lms = astronaut_on_backdrop(num_frames=1)
    skin = frames[0][skin_region_mask(frames.shape[1:3], lms[0])].astype(np.float64) / 255.0
    hand = procedural_hand("open", 200, seed=3)
    vis = hand.rgba[..., 3] > 0.5
    out = transfer_lab_stats(hand.rgba, skin)
    assert np.array_equal(out[..., 3], hand.rgba[..., 3])
    before, after = rgb_to_lab(hand.rgba[..., :3])[vis], rgb_to_lab(out[..., :3])[vis]
    target = rgb_to_lab(skin.astype(np.float32))
    np.testing.assert_allclose(after.mean(0), target.mean(0), atol=2.0)  # Lab units: ~1 is a just visible step
    # Lightness: the hand's own deviations, unscaled (shading 1), so perfectly correlated with the original's.
    assert np.corrcoef(before[:, 0], after[:, 0])[0, 1] > 0.99
    assert abs(after[:, 0].std() - before[:, 0].std()) < 0.1 * before[:, 0].std()
    flat = transfer_lab_stats(hand.rgba, skin, shading=0.0)
    assert rgb_to_lab(flat[..., :3])[vis][:, 0].std() < 0.2 * before[:, 0].std()


@pytest.mark.parametrize("landmarks", ["detected", "loose jaw"])
def test_hand_takes_the_skin_colour_in_front_of_a_red_stage(landmarks):
    """A face in front of a saturated red backdrop: the hand's mean colour lands near the face's skin (CIELAB
    distance), far from the backdrop, with the detector's landmarks and with a jaw line a third too wide (the
    hull then holds backdrop, as a profile's far-side contour does)."""
    frames, lms = astronaut_on_backdrop(num_frames=4, backdrop=RED_STAGE)
    skin_lab = rgb_to_lab(frames[0][skin_region_mask(frames.shape[1:3], lms[0])].astype(np.float32) / 255).mean(0)
    red_lab = rgb_to_lab(np.array(RED_STAGE, np.float32) / 255)
    if landmarks == "loose jaw":
        c = lms[0, 27:36].mean(0)
        lms = lms.copy()
        lms[:, :17] = c + 1.35 * (lms[:, :17] - c)
        hull = face_region_mask(frames.shape[1:3], None, lms[0])
        assert backdrop_red(frames[0][hull]).mean() > 0.1
    for seed in range(3):
        res = occlude_sequence(frames, landmarks=lms, seed=seed)
        m = res.masks[0] > 0.95
        hand = rgb_to_lab(res.frames[0][m].astype(np.float32) / 255)
        d_skin, d_red = np.linalg.norm(hand.mean(0) - skin_lab), np.linalg.norm(hand.mean(0) - red_lab)
        print(f"{landmarks} seed {seed}: Lab distance of the hand's mean to the skin {d_skin:.1f}, to the "
              f"backdrop {d_red:.1f}; hand L* std {hand[:, 0].std():.1f}")
        assert d_skin < 8.0 and d_red > 60.0
        assert res.params["color_transfer"]["landmarks_region"]
        assert np.array_equal(replay(res.params, frames).frames, res.frames)


def test_colour_from_the_first_detected_frame():
    """Boxes for every frame, landmarks only from frame 2 on (NaN before): the colour comes from frame 2's skin."""
    frames, lms = astronaut_on_backdrop(num_frames=4)
    boxes = extent_boxes(lms, forehead=FOREHEAD)
    partial = lms.copy()
    partial[:2] = np.nan
    res = occlude_sequence(frames, face_boxes=boxes, landmarks=partial, seed=1)
    assert res.params["color_transfer"]["from_frame"] == 2 and res.params["color_transfer"]["landmarks_region"]
    same = occlude_sequence(frames, face_boxes=boxes, landmarks=lms, seed=1)
    assert np.array_equal(res.frames, same.frames)  # static frames: frame 2's skin is frame 0's
    assert np.array_equal(replay(res.params, frames).frames, res.frames)


def test_version_1_params_replay_with_sliced_ot(astro):
    frames, boxes = astro
    cfg = OcclusionConfig.from_dict({"color": {"method": "sliced_ot", "region": "hull"}})
    res = occlude_sequence(frames, face_boxes=boxes, seed=4, config=cfg)
    v1 = json.loads(json.dumps(res.params))
    v1["version"] = 1
    for key in ("method", "region", "shading"):
        del v1["config"]["color"][key]
    assert np.array_equal(replay(v1, frames).frames, res.frames)


# -------------------------------------------------------------------------------------------- masks, motion
def test_mask_fraction_on_astronaut(astro):
    frames, boxes = astro
    fracs = []
    for seed in range(6):
        res = occlude_sequence(frames, face_boxes=boxes, seed=seed)
        assert res.frames.shape == frames.shape and res.frames.dtype == np.uint8
        assert res.masks.shape == frames.shape[:3] and res.masks.dtype == np.float32
        assert res.masks.min() >= 0 and res.masks.max() <= 1
        x0, y0, x1, y1 = np.round(boxes[0]).astype(int)
        fracs.append(float(res.masks[0][y0:y1, x0:x1].mean()))
        # Mask area equals the warped hand's alpha area (scale^2 x alpha sum) up to the edge erosion.
        p = res.params
        from occlusion_synth.hands import resize_hand
        from occlusion_synth.sequence import make_hand_source
        hand = make_hand_source(OcclusionConfig().hand).from_spec(p["hand"])
        if p["hand_resize"] != 1.0:
            hand = resize_hand(hand, p["hand_resize"])
        scale = p["scales"][0]
        expected = scale**2 * hand.rgba[..., 3].sum()
        assert 0.7 * expected < res.masks[0].sum() <= 1.05 * expected, (seed, res.masks[0].sum(), expected)
        # Outside the mask the frame is untouched.
        assert np.array_equal(res.frames[0][res.masks[0] == 0], frames[0][res.masks[0] == 0])
    print("face-box coverage per seed:", np.round(fracs, 3))
    assert all(0.08 < f < 0.6 for f in fracs)


def test_motion_is_smooth_and_bounded():
    frames, boxes = synthetic_frames(T=16)
    cfg = OcclusionConfig()
    res = occlude_sequence(frames, face_boxes=boxes, seed=5, config=cfg)
    _, size = box_center_size(boxes[0])
    anchors = np.asarray(res.params["anchors"])
    step = np.linalg.norm(np.diff(anchors, axis=0), axis=1)
    assert step.max() <= cfg.motion.max_speed * size + 1e-9
    assert step.max() > 0  # it does move
    dang = np.abs(np.diff(res.params["directions_deg"]))
    assert dang.max() <= cfg.motion.max_angular_speed_deg + 1e-9
    # Accelerations are bounded too (smooth, not jittery).
    acc = np.linalg.norm(np.diff(anchors, 2, axis=0), axis=1)
    assert acc.max() <= 2 * cfg.motion.max_accel * size + 1e-9
    # Measured from the output masks: the mask centroid moves at most the walk bound plus rotation about it.
    yy, xx = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    cent = np.array([[(m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()] for m in res.masks])
    assert np.linalg.norm(np.diff(cent, axis=0), axis=1).max() <= cfg.motion.max_speed * size + 1.0


def test_enter_and_leave():
    frames, boxes = synthetic_frames(T=16)
    cfg = OcclusionConfig()
    cfg.motion = MotionConfig(enter=True, leave=True, enter_leave_distance=1.2, enter_leave_speed=0.35)
    res = occlude_sequence(frames, face_boxes=boxes, seed=1, config=cfg)
    area = res.masks.reshape(16, -1).sum(1)
    mid = area[6:10].mean()
    assert area[0] < 0.5 * mid and area[-1] < 0.5 * mid  # starts and ends (mostly) off the face
    _, size = box_center_size(boxes[0])
    anchors = np.asarray(res.params["anchors"])
    step = np.linalg.norm(np.diff(anchors, axis=0), axis=1)
    bound = (cfg.motion.max_speed + cfg.motion.enter_leave_speed
             + cfg.motion.enter_leave_distance * np.radians(cfg.motion.max_angular_speed_deg)) * size
    assert step.max() <= bound
    # The hand rests fully on the face in the middle of the sequence.
    assert np.all(np.asarray(res.params["trajectory"]["retreat"])[6:10] == 0)
    # The enter/leave profile never exceeds its speed bound, whatever the sequence length.
    for T in (2, 5, 16, 64):
        for enter, leave in ((True, False), (False, True), (True, True)):
            mc = MotionConfig(enter=enter, leave=leave)
            prof = enter_leave_profile(T, mc)
            assert np.abs(np.diff(prof)).max() <= mc.enter_leave_speed + 1e-12
            assert prof.max() <= mc.enter_leave_distance + 1e-12


def test_follows_moving_face(astro):
    frames, boxes = astro
    res = occlude_sequence(frames, face_boxes=boxes, seed=7)
    # Relative to the face, the hand moves no more than the walk allows.
    c = np.array([box_center_size(b)[0] for b in boxes])
    s = np.array([box_center_size(b)[1] for b in boxes])
    rel = (np.asarray(res.params["anchors"]) - c) / s[:, None]
    assert np.linalg.norm(np.diff(rel, axis=0), axis=1).max() <= OcclusionConfig().motion.max_speed + 1e-6


# ---------------------------------------------------------------------------------------- reproducibility
def test_same_seed_identical_and_replay(astro):
    frames, boxes = astro
    a = occlude_sequence(frames, face_boxes=boxes, seed=11)
    b = occlude_sequence(frames, face_boxes=boxes, seed=11)
    c = occlude_sequence(frames, face_boxes=boxes, seed=12)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.params == b.params
    assert not np.array_equal(a.masks, c.masks)
    params = json.loads(json.dumps(a.params))  # what the command writes to params.json
    r = replay(params, frames)
    assert np.array_equal(r.frames, a.frames) and np.array_equal(r.masks, a.masks)


def test_landmarks_instead_of_boxes():
    frames, boxes = synthetic_frames(T=4)
    b = boxes[0]
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    c, half = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]) / 2
    lm = np.stack([c[0] + half[0] * np.cos(t), c[1] + half[1] * np.sin(t)], 1)
    lms = np.broadcast_to(lm, (4, 68, 2)).copy()
    derived = extent_boxes(lms, forehead=FOREHEAD)
    np.testing.assert_allclose(derived[:, [0, 2, 3]], boxes[:, [0, 2, 3]], atol=1e-6)
    assert (derived[:, 1] < boxes[:, 1]).all()  # extended up over the forehead
    res = occlude_sequence(frames, landmarks=lms, seed=0)
    assert res.masks[0].sum() > 100
    assert np.array_equal(replay(res.params, frames).frames, res.frames)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "case, pattern",
    [
        ("empty", "empty sequence"),
        ("gray3", "grayscale"),
        ("gray1", "grayscale"),
        ("float", "uint8"),
        ("no_box", "no face box"),
        ("nan_box", "no face box in frames \\[2\\]"),
        ("box_outside", "outside the image"),
        ("box_inverted", "zero or negative size"),
        ("box_shape", "face_boxes must have shape"),
        ("landmarks_shape", "landmarks must have shape"),
    ],
)
def test_bad_input(case: str, pattern: str):
    frames, boxes = synthetic_frames(T=4, H=64, W=64)
    kw: dict = {"face_boxes": boxes}
    if case == "empty":
        frames = frames[:0]
    elif case == "gray3":
        frames = frames[..., 0]
    elif case == "gray1":
        frames = frames[..., :1]
    elif case == "float":
        frames = frames.astype(np.float32)
    elif case == "no_box":
        kw = {}
    elif case == "nan_box":
        boxes[2, 0] = np.nan
    elif case == "box_outside":
        boxes = boxes + 200
    elif case == "box_inverted":
        boxes = boxes[:, [2, 3, 0, 1]]
    elif case == "box_shape":
        boxes = boxes[:2]
    elif case == "landmarks_shape":
        kw = {"landmarks": np.zeros((4, 5, 2))}
    if case in ("nan_box", "box_outside", "box_inverted", "box_shape"):
        kw = {"face_boxes": boxes}
    with pytest.raises(ValueError, match=pattern):
        occlude_sequence(frames, **kw)


def test_replay_rejects_mismatched_frames(astro):
    frames, boxes = astro
    res = occlude_sequence(frames, face_boxes=boxes, seed=0)
    with pytest.raises(ValueError, match="params were made for"):
        replay(res.params, frames[:8])


def test_estimate_axis_rotated():
    hand = procedural_hand("open", 160, seed=1)
    a = (hand.rgba[..., 3] > 0.5).astype(np.float32)
    rot = cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)  # fingers now point right
    ax = _estimate_axis(rot)
    assert ax[0] > 0.9

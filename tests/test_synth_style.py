"""The corpus's appearance styles (avface/synth/style.py): the "real" style changes the pixels the way real
footage differs (structure, noise, blur, lights), never the geometry or the ground truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avface.io import read_video
from avface.render.shading import sh_shading
from avface.synth.config import resolve_config
from avface.synth.scene import random_background
from avface.synth.style import (
    camera_degrade,
    directional_sh,
    real_look,
    structured_background,
)


def edge_energy(img: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image (structure and noise both raise it)."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def test_structured_backgrounds_have_more_structure():
    studio = [edge_energy(random_background(np.random.default_rng(s), 224, 224)) for s in range(8)]
    real = [edge_energy(structured_background(np.random.default_rng(s), 224, 224)) for s in range(8)]
    print(f"edge energy: studio {np.mean(studio):.2f}, real {np.mean(real):.2f}")
    assert np.median(real) > 2.0 * np.median(studio)


def test_directional_sh_lights_the_side_facing_each_light():
    dirs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    colors = np.array([[0.6, 0.6, 0.6], [0.0, 0.0, 0.3]])  # a white key from +x, a blue light from the front
    sh = torch.from_numpy(directional_sh(dirs, colors, np.array([0.3, 0.3, 0.3])))[None]
    normals = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 0, 1.0]]).T[None, :, :, None]  # (1, 3, 3, 1)
    e = sh_shading(normals, sh)[0, :, :, 0].T.numpy()  # (3 normals, RGB)
    # facing the key: ambient + key (9-band truncation of the clamped cosine: within ~10 %)
    np.testing.assert_allclose(e[0, :2], 0.9, rtol=0.12)
    assert e[1, 0] < 0.45  # facing away from it: about the ambient
    assert e[2, 2] - e[2, 0] > 0.2  # the front is lit blue by the second light


def test_camera_degrade_adds_noise_and_blur():
    look = real_look(np.random.default_rng(0), 224)  # its blur at 224 px
    flat = np.full((4, 96, 96, 3), 128, np.uint8)

    def grain(frames: np.ndarray) -> float:  # spread of each pixel about its 5x5 neighbourhood
        f = frames.astype(np.float32)
        return float((f - np.stack([cv2.blur(x, (5, 5)) for x in f]))[:, 8:-8, 8:-8].std())

    noisy = grain(camera_degrade(np.random.default_rng(1), flat, look))
    clean = grain(camera_degrade(np.random.default_rng(1), flat, replace(look, read_noise=0.0, shot_noise=0.0)))
    # read + shot noise at mid grey, after the JPEG (which removes some of it)
    expected = np.sqrt(look.read_noise ** 2 + look.shot_noise ** 2 * 128 * look.exposure)
    print(f"grain: {noisy:.2f} levels (noise drawn: {expected:.2f}), without the noise {clean:.2f}")
    assert 0.25 * expected < noisy < 2.0 * expected and noisy > 1.8 * clean  # clean: the vignette and JPEG blocks
    step = np.zeros((1, 96, 96, 3), np.uint8)
    step[:, :, 48:] = 255
    blurred = camera_degrade(np.random.default_rng(1), step, look).astype(np.float32).mean(-1)[0]
    jump = np.abs(np.diff(blurred[20:76], axis=1)).max(axis=1).mean()
    assert jump < 0.75 * 255 * look.exposure  # the edge is spread over more than one pixel


@pytest.fixture(scope="module")
def two_styles(tmp_path_factory) -> dict[str, Path]:
    """The same occluded clip made in each style (96 px, one sentence), in this process."""
    from avface.synth.corpus import plan_vox, run_local

    out = {}
    for style in ("studio", "real"):
        cfg = resolve_config({"out": "unused", "size": "tiny", "seed": 1, "occlusion_share": 1.0,
                              "vox": {"dev_identities": 1, "test_identities": 0, "clips_per_video": 1,
                                      "image_size": 96, "style": style}, "multiface": {"enabled": False}})
        job = plan_vox(cfg)[0]
        root = tmp_path_factory.mktemp(style)
        res = run_local("vox", job, cfg, root)
        out[style] = root / res["clip"]
    return out


def _sidecar(mp4: Path) -> dict:
    split, _, ident, ytid, name = mp4.parts[-5:]
    root = mp4.parents[4]
    with np.load(root / "gt" / split / ident / ytid / name.replace(".mp4", ".npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_real_style_same_ground_truth_other_pixels(two_styles):
    a, b = _sidecar(two_styles["studio"]), _sidecar(two_styles["real"])
    assert a.keys() == b.keys()
    assert a["occlusion_mask"].max() > 0  # the clip is occluded: the hand's placement is style-independent too
    for key in a:
        if key in ("sh", "meta"):
            continue  # the lights, and the style's name in the meta
        assert np.array_equal(a[key], b[key]), key
    assert not np.allclose(a["sh"], b["sh"])
    fa, fb = read_video(str(two_styles["studio"]))[0], read_video(str(two_styles["real"]))[0]
    assert fa.shape == fb.shape
    assert np.abs(fa.astype(np.float32) - fb.astype(np.float32)).mean() > 10.0
    # Beside the head (the outer columns: the still background), the camera's noise and the JPEG of every frame
    # change the pixels from frame to frame; the studio's faint noise mostly does not survive the H.264.
    def flicker(frames: np.ndarray) -> float:
        side = frames[:, :, np.r_[0:12, 84:96]].astype(np.float32)
        return float(np.abs(np.diff(side, axis=0)).mean())

    print(f"frame-to-frame change beside the head: studio {flicker(fa):.2f}, real {flicker(fb):.2f}")
    assert flicker(fb) > 1.5 * flicker(fa)
    # On the face, the camera's defocus and JPEG remove fine detail (at 96 px they outweigh the skin texture that
    # the real style adds): its high-pass energy drops.
    face = a["face_mask"].astype(bool) & (a["occlusion_mask"] == 0)
    face = np.stack([cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in face])

    def face_detail(frames: np.ndarray) -> float:
        grey = frames.astype(np.float32).mean(-1)
        hp = grey - np.stack([cv2.GaussianBlur(g, (0, 0), 2.0) for g in grey])
        return float(np.abs(hp[face]).mean())

    print(f"face detail: studio {face_detail(fa):.2f}, real {face_detail(fb):.2f}")
    assert face_detail(fb) < 0.8 * face_detail(fa)


def test_style_must_be_known():
    with pytest.raises(Exception, match="style"):
        resolve_config({"out": "x", "vox": {"style": "cartoon"}})

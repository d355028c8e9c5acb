"""Landmark helpers: MediaPipe -> iBUG-68 mapping, crop boxes, detector selection, normals teacher."""

import numpy as np
import pytest
import torch

from avface.landmarks import NullDetector, get_detector, mediapipe_available, mediapipe_to_ibug68
from avface.landmarks.crop import crop_resize
from avface.utils.boxes import boxes_from_landmarks


def test_mapping_shapes_and_fixed_points(rng):
    pts = rng.uniform(0, 1, (3, 468, 2)).astype(np.float32)
    lm = mediapipe_to_ibug68(pts)
    assert lm.shape == (3, 68, 2) and lm.dtype == np.float32
    np.testing.assert_array_equal(lm[:, 30], pts[:, 4])  # nose tip
    np.testing.assert_array_equal(lm[:, 36], pts[:, 33])  # right eye outer corner
    np.testing.assert_array_equal(lm[:, 45], pts[:, 263])  # left eye outer corner


def test_detector_selection():
    assert isinstance(get_detector("none"), NullDetector)
    lm, valid = get_detector("none")(np.zeros((3, 8, 8, 3), np.uint8))
    assert lm.shape == (3, 68, 2) and not valid.any()
    if not mediapipe_available():
        assert isinstance(get_detector("auto"), NullDetector)
        with pytest.raises(ImportError, match="mediapipe"):
            get_detector("mediapipe")


def test_crop_boxes_and_pixel_convention():
    lm = np.zeros((4, 68, 2), np.float32)
    lm[:, :, 0] = np.linspace(40, 60, 68)
    lm[:, :, 1] = np.linspace(30, 70, 68)
    valid = np.array([True, False, True, True])
    boxes = boxes_from_landmarks(lm, valid, 1.0, (100, 100), smooth=1)
    np.testing.assert_allclose(boxes[0], [30, 30, 70, 70])
    np.testing.assert_allclose(boxes[1], boxes[0])  # invalid frame takes the nearest valid box
    img = np.zeros((100, 100, 3), np.uint8)
    img[50, 50] = 255  # pixel centre (50.5, 50.5)
    out, s, off = crop_resize(img, np.array([30, 30, 70, 70]), 80)
    c = (np.array([50.5, 50.5]) - off) * s  # = (41, 41): pixel index 40.5 -> the bright pixel spreads over 40, 41
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert abs(x + 0.5 - c[0]) <= 1.0 and abs(y + 0.5 - c[1]) <= 1.0
    nolm = boxes_from_landmarks(lm, np.zeros(4, bool), 1.0, (100, 120))
    np.testing.assert_allclose(nolm[0], [10, 0, 110, 100])


def test_unet_resnet_teacher_loads_user_checkpoint(tmp_path):
    from avface.data.normals_teacher import UNetResNetTeacher, default_normals_net, sidecar_normals

    torch.manual_seed(0)
    net = default_normals_net(64)
    path = tmp_path / "normals.pth"
    torch.save(net.state_dict(), path)
    teacher = UNetResNetTeacher(str(path), image_size=64, batch_size=4)
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    n = teacher(frames)
    assert n.shape == (5, 64, 64, 3) and n.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-4)
    with torch.no_grad():  # the teacher's raw output equals the saved network's
        ref = torch.nn.functional.normalize(net.eval()(torch.as_tensor(frames[:1]).permute(0, 3, 1, 2).float() / 255),
                                            dim=1)
    np.testing.assert_allclose(n[0], ref[0].permute(1, 2, 0).numpy(), atol=1e-4)
    with pytest.raises(FileNotFoundError, match="normals teacher checkpoint"):
        UNetResNetTeacher(str(tmp_path / "missing.pth"), image_size=64)
    gt = {"normals": np.random.default_rng(1).standard_normal((10, 8, 8, 3)).astype(np.float32)}
    np.testing.assert_array_equal(sidecar_normals(gt, np.array([3, 4, 20])), gt["normals"][[3, 4, 9]])

"""Pictures: contact sheets and overlays."""

import numpy as np
import pytest

from avface.viz import draw_landmarks, make_grid, save_png, tint_mask


def test_make_grid_tiles_in_order():
    images = np.stack([np.full((4, 5, 3), 10 * i, np.uint8) for i in range(5)])
    sheet = make_grid(images, ncols=3, pad=1)
    assert sheet.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert (sheet[1:5, 1:6] == 0).all() and (sheet[1:5, 7:12] == 10).all() and (sheet[6:10, 7:12] == 40).all()
    assert (sheet[6:10, 13:18] == 255).all()  # the empty sixth tile is padding
    with pytest.raises(ValueError, match="uint8"):
        make_grid(images.astype(np.float32))
    with pytest.raises(ValueError, match="N > 0"):
        make_grid(np.zeros((0, 4, 4, 3), np.uint8))


def test_draw_landmarks_marks_the_pixel_under_each_point():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_landmarks(image, np.array([[5.5, 12.5]]), color=(0, 255, 0), radius=0)
    assert tuple(out[12, 5]) == (0, 255, 0) and out.sum() == 255
    assert image.sum() == 0  # input untouched


def test_tint_mask_only_where_masked(tmp_path):
    image = np.full((6, 6, 3), 100, np.uint8)
    mask = np.zeros((6, 6), np.uint8)
    mask[:3] = 255
    out = tint_mask(image, mask, color=(255, 0, 0), strength=0.5)
    assert (out[3:] == 100).all()
    assert tuple(out[0, 0]) == (178, 50, 50)
    assert np.array_equal(tint_mask(image, mask.astype(np.float32) / 255, (255, 0, 0), 0.5), out)
    save_png(tmp_path / "x.png", out)
    assert (tmp_path / "x.png").stat().st_size > 0

"""UV-space albedo models (FLAME_texture.npz / DECA's FLAME_albedo_from_BFM.npz layouts) become per-vertex albedo."""

from __future__ import annotations

import numpy as np
import pytest

from avface.face_model import load_face_model
from avface.face_model.albedo import read_uv_albedo, with_uv_albedo


def _uv_ramp(side: int) -> np.ndarray:
    """(side, side, 3): red = u, green = v (v up: row 0 is v = 1), blue = 0.5."""
    u = (np.arange(side) + 0.5) / side
    img = np.zeros((side, side, 3), np.float32)
    img[..., 0] = u[None, :]
    img[..., 1] = u[::-1][:, None]
    img[..., 2] = 0.5
    return img


def test_flame_texture_and_bfm_layouts_sample_each_vertex_at_its_uv(tmp_path):
    data = load_face_model(None)
    side, k = 64, 3
    ramp = _uv_ramp(side)
    basis = np.stack([ramp * (i + 1) for i in range(k)], axis=-1)  # (S, S, 3, K)
    np.savez(tmp_path / "FLAME_texture.npz", mean=ramp * 255.0, tex_dir=basis * 255.0)
    np.savez(tmp_path / "FLAME_albedo_from_BFM.npz", MU=ramp.reshape(1, -1), PC=basis.reshape(-1, k))
    # expected: the mean over a vertex's UV coordinates of (u, v, 0.5)
    vert, uvi = data.faces.reshape(-1), data.uv_faces.reshape(-1)
    pairs = np.unique(np.stack([vert, uvi], 1), axis=0)
    expected = np.zeros((data.v_template.shape[0], 2))
    np.add.at(expected, pairs[:, 0], data.uv_coords[pairs[:, 1]])
    expected /= np.bincount(pairs[:, 0], minlength=len(expected))[:, None]
    for name in ("FLAME_texture.npz", "FLAME_albedo_from_BFM.npz"):
        out = with_uv_albedo(data, tmp_path / name, n_albedo=2)
        assert out.albedo_basis.shape == (data.v_template.shape[0], 3, 2)
        inner = (expected > 1.5 / side).all(1) & (expected < 1 - 1.5 / side).all(1)  # away from the clamped rim
        np.testing.assert_allclose(out.albedo_mean[inner, :2], expected[inner], atol=1e-4)
        np.testing.assert_allclose(out.albedo_mean[:, 2], 0.5, atol=1e-6)
        np.testing.assert_allclose(out.albedo_basis[:, :, 1], 2 * out.albedo_mean, atol=1e-4)
        out.validate()


def test_bad_albedo_files_name_the_file(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz.*unknown albedo model"):
        read_uv_albedo(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        read_uv_albedo(tmp_path / "broken.npz")

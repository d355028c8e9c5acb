"""The open starter model: structure, determinism, anatomy of the jaw / blinks / landmarks, symmetry, bases."""

import time

import numpy as np
import pytest
import torch

from avface.face_model import FaceModel, build_starter_model, load_face_model
from avface.face_model.data import FaceModelData
from avface.face_model.loading import STARTER_MODEL_FILE
from avface.face_model.mesh import read_obj
from avface.face_model.starter import ASSET_OBJ, EXPRESSION_NAMES, SHAPE_NAMES

# iBUG-68 left/right flip permutation.
FLIP68 = np.array(
    [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 27, 28, 29, 30,
     35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56,
     55, 64, 63, 62, 61, 60, 67, 66, 65])


@pytest.fixture(scope="module")
def data():
    return load_face_model(None)


@pytest.fixture(scope="module")
def model(data):
    return FaceModel(data).double()


def _expr(name, value=1.0):
    e = torch.zeros(1, 50, dtype=torch.float64)
    e[0, EXPRESSION_NAMES.index(name)] = value
    return e


def test_structure_and_counts(data):
    assert data.num_vertices > 2 * 468 and data.num_joints == 5
    assert data.n_shape == 100 and data.n_expression == 50 and data.n_albedo == 50
    np.testing.assert_array_equal(data.parents, [-1, 0, 1, 1, 1])
    np.testing.assert_allclose(data.lbs_weights.sum(1), 1.0, atol=1e-6)
    assert (data.lbs_weights >= 0).all()
    assert 0.0 <= data.uv_coords.min() and data.uv_coords.max() <= 1.0
    assert 0.0 <= data.albedo_mean.min() and data.albedo_mean.max() <= 1.0
    # FLAME-like size and frame: metres, ~0.17 m chin to forehead, +z towards the viewer
    v = data.v_template
    assert 0.15 < np.ptp(v[:, 1]) < 0.22 and 0.12 < np.ptp(v[:, 0]) < 0.2
    assert np.abs(v.mean(0)).max() < 0.1
    # every face is front-facing where the skin looks at the viewer: mean normal points +z
    f = data.faces[: 100]
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert n[:, 2].mean() > 0


def test_mediapipe_ids_keep_positions(data):
    v_obj, _, _, _ = read_obj(ASSET_OBJ)
    # away from the lips (moved to close the mouth) the first 468 vertices are the canonical mesh, in metres
    lips = set(data.regions["lips"].tolist())
    keep = np.array([i for i in range(468) if i not in lips])
    d = data.v_template[keep] - v_obj[keep] * 0.01
    np.testing.assert_allclose(d - d[0], 0.0, atol=1e-6)  # a pure translation


def test_deterministic_and_seeded():
    a, b = build_starter_model(0), build_starter_model(0)
    assert a.equals(b)
    c = build_starter_model(1)
    n_sem = len(SHAPE_NAMES)
    np.testing.assert_allclose(c.shapedirs[:, :, :n_sem], a.shapedirs[:, :, :n_sem], atol=1e-7)
    assert not np.allclose(c.shapedirs[:, :, n_sem:], a.shapedirs[:, :, n_sem:])


def test_the_shipped_file_is_the_recipe_to_float_rounding(data):
    """``load_face_model(None)`` reads the shipped file; the recipe must still build it (the same name, structure,
    integer arrays; floats equal to the last bits a CPU's LAPACK may change), or the file needs a rebuild."""
    assert STARTER_MODEL_FILE.is_file() and (STARTER_MODEL_FILE.parent / "LICENSE").is_file()
    assert load_face_model(None) is data and data.equals(FaceModelData.load_npz(STARTER_MODEL_FILE))
    built, shipped = build_starter_model(0).to_arrays(), data.to_arrays()
    assert built.keys() == shipped.keys()
    for key, value in shipped.items():
        if value.dtype.kind in "iuU":
            np.testing.assert_array_equal(built[key], value, err_msg=key)
        else:
            scale = max(float(np.abs(value).max()), 1e-12)
            np.testing.assert_allclose(built[key], value, rtol=0, atol=1e-5 * scale, err_msg=key)


def test_build_is_fast_and_cached():
    t = time.perf_counter()
    build_starter_model(3)
    assert time.perf_counter() - t < 2.0
    assert load_face_model(None) is load_face_model(None)


def test_jaw_opens_lower_lip_not_forehead(data, model):
    rest = model(shape=torch.zeros(1, 100, dtype=torch.float64)).vertices[0].numpy()
    opened = model(jaw_pose=torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64)).vertices[0].numpy()
    d = opened - rest
    low, up = data.regions["lip_lower"], data.regions["lip_upper"]
    assert d[low, 1].mean() < -0.008  # the lower lip drops by more than 8 mm
    # the upper lip stays (its corners stretch with the jaw, so look at the middle of it)
    mid_up = up[np.abs(rest[up, 0]) < 0.015]
    assert np.abs(d[mid_up]).max() < 0.002
    assert np.linalg.norm(d[up], axis=1).mean() < 0.3 * np.linalg.norm(d[low], axis=1).mean()
    assert np.abs(d[data.regions["forehead"]]).max() < 1e-9
    assert np.abs(d[data.regions["nose"]]).max() < 1e-3
    # the chin (MediaPipe 152) moves down and back, as a hinge behind it would
    assert d[152, 1] < -0.01
    # lip gap opens: inner lip midpoints 13 (upper) and 14 (lower)
    assert np.linalg.norm(rest[13] - rest[14]) < 5e-4
    assert np.linalg.norm(opened[13] - opened[14]) > 0.01


@pytest.mark.parametrize(("name", "up", "low", "other_up", "other_low"),
                         [("blink_right", 159, 145, 386, 374), ("blink_left", 386, 374, 159, 145)])
def test_blinks_close_one_eyelid_gap(model, name, up, low, other_up, other_low):
    rest = model(expression=torch.zeros(1, 50, dtype=torch.float64)).vertices[0].numpy()
    closed = model(expression=_expr(name)).vertices[0].numpy()
    gap0 = np.linalg.norm(rest[up] - rest[low])
    assert gap0 > 0.005
    assert np.linalg.norm(closed[up] - closed[low]) < 0.15 * gap0
    assert np.linalg.norm(closed[other_up] - closed[other_low]) == pytest.approx(gap0, rel=1e-6)


def test_landmarks_mirror_symmetric_and_in_place(model):
    out = model(shape=torch.zeros(1, 100, dtype=torch.float64))
    L = out.landmarks68[0].numpy()
    mirrored = L[FLIP68] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(L, mirrored, atol=1e-7)
    # iBUG order: 36 right eye outer (-x) ... 45 left eye outer (+x); chin lowest; brows above eyes above nose
    assert L[36, 0] < L[39, 0] < 0 < L[42, 0] < L[45, 0]
    assert L[8, 1] == L[:, 1].min()
    assert L[19, 1] > L[37, 1] > L[30, 1] > L[51, 1] > L[57, 1]
    assert L[30, 2] == L[:, 2].max()  # nose tip is the most forward landmark
    assert L[48, 0] < L[51, 0] < L[54, 0]
    # NoW 7: eye corners, subnasale, mouth corners = MediaPipe 33, 133, 362, 263, 2, 61, 291
    v = out.vertices[0].numpy()
    np.testing.assert_allclose(out.landmarks_now7[0].numpy(), v[[33, 133, 362, 263, 2, 61, 291]], atol=1e-9)


def test_posed_model_mirror_symmetry(data, model):
    """A symmetric expression on a symmetric identity gives a mirror-symmetric mesh."""
    from scipy.spatial import cKDTree

    jaw = torch.tensor([[0.2, 0, 0]], dtype=torch.float64)
    # mirror pairs from the open-mouth mesh (at rest the closed lips make vertices 13 and 14 coincide)
    v0 = model(jaw_pose=jaw).vertices[0].numpy()
    dist, mirror = cKDTree(v0 * [-1, 1, 1]).query(v0)
    assert dist.max() < 1e-7
    e = _expr("smile", 0.8) + _expr("brow_raise", 0.5)
    v = model(expression=e, jaw_pose=jaw).vertices[0].numpy()
    np.testing.assert_allclose(v, v[mirror] * [-1, 1, 1], atol=1e-6)


def test_bases_orthogonal_and_scaled(data):
    S = data.shapedirs.reshape(-1, data.n_shape).astype(np.float64)
    cos = (S.T @ S) / np.outer(np.linalg.norm(S, axis=0), np.linalg.norm(S, axis=0))
    assert np.abs(cos - np.eye(data.n_shape)).max() < 1e-4
    E = data.exprdirs.reshape(-1, data.n_expression).astype(np.float64)
    cos_e = (E.T @ E) / np.outer(np.linalg.norm(E, axis=0), np.linalg.norm(E, axis=0))
    n_sem = len(EXPRESSION_NAMES)
    assert np.abs(cos_e[n_sem:, :] - np.eye(data.n_expression)[n_sem:, :]).max() < 1e-4
    assert np.abs(cos_e[:n_sem, :n_sem] - np.eye(n_sem)).max() < 0.7  # semantic ones overlap only partly
    # a random identity moves vertices by millimetres, not centimetres
    z = np.random.default_rng(0).standard_normal((100, 8))
    disp = np.linalg.norm(np.einsum("vck,kb->bvc", data.shapedirs, z), axis=-1)
    assert 0.001 < np.sqrt((disp**2).mean()) < 0.012
    assert disp.max() < 0.03
    # identity never squashes the eyeballs (they translate rigidly)
    ball = data.regions["eyeball_left"]
    assert np.abs(data.shapedirs[ball] - data.shapedirs[ball[:1]]).max() < 1e-9


def test_gaze_rotates_only_eyeballs(data, model):
    out = model(eye_pose=torch.tensor([[0.0, 0.3, 0.0, 0.0, 0.3, 0.0]], dtype=torch.float64))
    rest = model(shape=torch.zeros(1, 100, dtype=torch.float64))
    d = np.linalg.norm((out.vertices - rest.vertices)[0].numpy(), axis=-1)
    balls = np.union1d(data.regions["eyeball_left"], data.regions["eyeball_right"])
    assert d[balls].max() > 0.003
    assert np.delete(d, balls).max() < 1e-12
    # the pupil (front pole, first eyeball vertex) turns towards +x for a positive yaw
    assert out.vertices[0, balls.min(), 0] > rest.vertices[0, balls.min(), 0]


def test_regions(data):
    v = data.v_template
    for r in ("face", "lips", "lip_upper", "lip_lower", "eye_left", "eye_right", "brow_left", "brow_right", "nose"):
        assert len(data.regions[r]) > 5, r
    assert v[data.regions["eye_left"], 0].mean() > 0 > v[data.regions["eye_right"], 0].mean()
    assert v[data.regions["lip_upper"], 1].mean() > v[data.regions["lip_lower"], 1].mean()
    assert v[data.regions["brow_left"], 1].mean() > v[data.regions["eye_left"], 1].mean()
    assert set(data.regions["lips"].tolist()) == set(data.regions["lip_upper"].tolist()) | set(
        data.regions["lip_lower"].tolist())

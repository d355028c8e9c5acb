"""FLAME layer: LBS against an independent float64 reference, gradients, dtypes, truncation, dynamic contour,
and the FaceModelData .npz round trip."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from avface.face_model import FaceModel, FaceModelData, load_face_model
from avface.face_model.flame import dynamic_contour_index
from avface.face_model.lbs import batch_rodrigues
from avface.face_model.starter import EXPRESSION_NAMES
from avface.face_model.testing import random_face_model_data, reference_flame_numpy


def _random_params(model: FaceModel, b: int, seed: int, scale: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "shape": torch.randn(b, model.n_shape, generator=g, dtype=torch.float64),
        "expression": torch.randn(b, model.n_expression, generator=g, dtype=torch.float64),
        "global_pose": scale * torch.randn(b, 3, generator=g, dtype=torch.float64),
        "neck_pose": scale * torch.randn(b, 3, generator=g, dtype=torch.float64),
        "jaw_pose": scale * torch.randn(b, 3, generator=g, dtype=torch.float64),
        "eye_pose": scale * torch.randn(b, 6, generator=g, dtype=torch.float64),
    }


def _check_against_reference(data: FaceModelData, n_shape: int, n_expression: int, seed: int) -> None:
    model = FaceModel(data, n_shape=n_shape, n_expression=n_expression).double()
    p = _random_params(model, 2, seed)
    out = model(**p)
    for b in range(2):
        pose = torch.cat([p["global_pose"][b], p["neck_pose"][b], p["jaw_pose"][b], p["eye_pose"][b]]).view(5, 3)
        ref_v, ref_j = reference_flame_numpy(data, p["shape"][b].numpy(), p["expression"][b].numpy(), pose.numpy())
        np.testing.assert_allclose(out.vertices[b].numpy(), ref_v, atol=1e-9)
        np.testing.assert_allclose(out.joints[b].numpy(), ref_j, atol=1e-9)


def test_lbs_matches_reference_random_flame_model():
    _check_against_reference(random_face_model_data(seed=3), 12, 8, seed=0)


def test_lbs_matches_reference_starter_model():
    _check_against_reference(load_face_model(None), 100, 50, seed=1)


def test_rest_pose_is_template_and_landmarks_barycentric():
    data = random_face_model_data(seed=1)
    model = FaceModel(data, n_shape=12, n_expression=8)
    out = model(shape=torch.zeros(1, 12))
    np.testing.assert_allclose(out.vertices[0].numpy(), data.v_template, atol=1e-6)
    tri = data.v_template[data.faces[data.lmk68_faces]]  # (68, 3, 3)
    expected = np.einsum("lkc,lk->lc", tri, data.lmk68_bary)
    np.testing.assert_allclose(out.landmarks68[0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(out.landmarks_now7[0].numpy(), expected[[36, 39, 42, 45, 33, 48, 54]], atol=1e-6)


def test_rodrigues_matches_scipy_and_zero_is_identity():
    from scipy.spatial.transform import Rotation

    r = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    R = batch_rodrigues(r).numpy()
    np.testing.assert_allclose(R, Rotation.from_rotvec(r.numpy()).as_matrix(), atol=1e-7)
    np.testing.assert_allclose(batch_rodrigues(torch.zeros(2, 3)).numpy(), np.stack([np.eye(3)] * 2), atol=1e-6)


def test_gradients_reach_every_parameter_float32():
    data = random_face_model_data(seed=2)
    model = FaceModel(data, n_shape=12, n_expression=8)
    p = {k: v.float().requires_grad_(True) for k, v in _random_params(model, 2, seed=5).items()}
    out = model(**p)
    w = torch.randn_like(out.vertices)
    loss = (out.vertices * w).sum() + out.landmarks68.square().sum() + out.landmarks68_dynamic.sum()
    loss.backward()
    for k, t in p.items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), k
        assert t.grad.abs().max() > 0, f"no gradient reaches {k}"
    assert out.vertices.dtype == torch.float32


def test_zero_pose_gradients_are_finite():
    model = FaceModel(load_face_model(None))
    p = {k: torch.zeros(1, n, requires_grad=True) for k, n in
         (("shape", 100), ("expression", 50), ("global_pose", 3), ("jaw_pose", 3), ("eye_pose", 6))}
    model(**p).vertices.sum().backward()
    for k, t in p.items():
        assert torch.isfinite(t.grad).all(), k
    assert p["jaw_pose"].grad.abs().max() > 0


def test_truncation_padding_and_errors():
    data = random_face_model_data(seed=4)
    model = FaceModel(data, n_shape=5, n_expression=3)
    assert model.shapedirs.shape == (data.num_vertices, 3, 8)
    # fewer coefficients than the model has are zero-padded
    a = model(shape=torch.ones(1, 2))
    b = model(shape=torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(a.vertices, b.vertices)
    with pytest.raises(ValueError, match="n_shape"):
        FaceModel(data, n_shape=13)
    with pytest.raises(ValueError, match="expression"):
        model(expression=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="jaw_pose"):
        model(jaw_pose=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="batch size"):
        model()


def test_albedo():
    data = random_face_model_data(seed=5)
    model = FaceModel(data, n_shape=12, n_expression=8)
    params = torch.randn(3, 2)
    alb = model.albedo(params)
    expected = data.albedo_mean[None] + np.einsum("bk,vck->bvc", params.numpy(), data.albedo_basis[:, :, :2])
    np.testing.assert_allclose(alb.numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="albedo"):
        model.albedo(torch.zeros(1, 5))


def _deca_contour_row(global_pose: torch.Tensor, neck_pose: torch.Tensor) -> torch.Tensor:
    """DECA's ``_find_dynamic_lmk_idx_and_bcoords`` row, transcribed literally (note the minus on the euler angle:
    DECA indexes the table with -atan2(-R[2, 0], sy))."""
    rots = [batch_rodrigues(p) for p in (neck_pose, global_pose)]  # neck_kin_chain = [neck, root]
    rel = torch.eye(3, dtype=global_pose.dtype)[None].expand(global_pose.shape[0], -1, -1)
    for r in rots:
        rel = torch.bmm(r, rel)
    sy = torch.sqrt(rel[:, 0, 0] * rel[:, 0, 0] + rel[:, 1, 0] * rel[:, 1, 0])
    euler = torch.atan2(-rel[:, 2, 0], sy)
    y = torch.round(torch.clamp(-euler * 180.0 / np.pi, max=39)).to(torch.long)
    neg_mask = y.lt(0).to(torch.long)
    mask = y.lt(-39).to(torch.long)
    neg_vals = mask * 78 + (1 - mask) * (39 - y)
    return neg_mask * neg_vals + (1 - neg_mask) * y


# A positive rotation about +y (the face turning towards +x) is a *negative* DECA yaw: rows 40..78.
@pytest.mark.parametrize(("yaw_deg", "row"), [(0.0, 0), (-20.2, 20), (-39.0, 39), (-60.0, 39), (1.0, 40),
                                              (10.4, 49), (39.0, 78), (70.0, 78)])
def test_dynamic_contour_row_follows_deca(yaw_deg, row):
    gp = torch.tensor([[0.0, math.radians(yaw_deg), 0.0]], dtype=torch.float64)
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    assert int(_deca_contour_row(gp, zeros)[0]) == row
    assert int(dynamic_contour_index(gp, zeros)[0]) == row
    # the neck's yaw adds to the global one
    half = torch.tensor([[0.0, math.radians(yaw_deg) / 2, 0.0]], dtype=torch.float64)
    assert int(dynamic_contour_index(half, half)[0]) == row


def test_dynamic_contour_row_matches_deca_for_random_poses():
    g = torch.Generator().manual_seed(11)
    gp = 0.6 * torch.randn(256, 3, generator=g, dtype=torch.float64)
    neck = 0.4 * torch.randn(256, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(dynamic_contour_index(gp, neck), _deca_contour_row(gp, neck), rtol=0, atol=0)


def test_dynamic_landmarks_use_the_yaw_row():
    data = random_face_model_data(seed=6)
    model = FaceModel(data, n_shape=12, n_expression=8).double()
    gp = torch.tensor([[0.0, math.radians(12.0), 0.0]], dtype=torch.float64)
    out = model(global_pose=gp)
    v = out.vertices[0].numpy()
    row = 39 + 12  # DECA yaw -12 deg
    contour = np.einsum("lkc,lk->lc", v[data.faces[data.dynamic_lmk_faces[row]]], data.dynamic_lmk_bary[row])
    np.testing.assert_allclose(out.landmarks68_dynamic[0, :17].numpy(), contour, atol=1e-9)
    np.testing.assert_allclose(out.landmarks68_dynamic[0, 17:].numpy(), out.landmarks68[0, 17:].numpy())
    assert not np.allclose(out.landmarks68_dynamic[0, :17].numpy(), out.landmarks68[0, :17].numpy())


def test_npz_round_trip_is_identical(tmp_path):
    for data in (random_face_model_data(seed=7), load_face_model(None)):
        path = data.save_npz(tmp_path / f"{data.name}.npz")
        back = FaceModelData.load_npz(path)
        assert back.equals(data)
        assert back.regions.keys() == data.regions.keys()
        assert load_face_model(path).equals(data)
        m1, m2 = FaceModel(data, None, None), FaceModel(back, None, None)
        p = {k: v.float() for k, v in _random_params(m1, 1, seed=8).items()}
        torch.testing.assert_close(m1(**p).vertices, m2(**p).vertices, rtol=0, atol=0)
    with np.load(path, allow_pickle=False) as z:
        assert "region__lips" in z.files


def test_semantic_expression_count_is_carried_and_derived_for_old_files(tmp_path):
    """``n_semantic_expression``: the starter model names its first ``len(EXPRESSION_NAMES)`` expression bases,
    other models none; the ``.npz`` stores it, and a file written before it was derives it from the name."""
    starter = load_face_model(None)
    assert starter.n_semantic_expression == len(EXPRESSION_NAMES)
    assert FaceModel(starter).n_semantic_expression == len(EXPRESSION_NAMES)
    assert random_face_model_data(seed=7).n_semantic_expression == 0
    for data in (starter, random_face_model_data(seed=7)):
        old = {k: v for k, v in data.to_arrays().items() if k != "n_semantic_expression"}
        np.savez(tmp_path / "old.npz", **old)
        assert FaceModelData.load_npz(tmp_path / "old.npz").n_semantic_expression == data.n_semantic_expression
    renamed = dataclasses.replace(random_face_model_data(seed=7), n_semantic_expression=3)
    assert FaceModelData.load_npz(renamed.save_npz(tmp_path / "new.npz")).n_semantic_expression == 3
    with pytest.raises(ValueError, match="n_semantic_expression"):
        dataclasses.replace(starter, n_semantic_expression=starter.n_expression + 1)


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        FaceModelData.load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="bad.npz"):
        FaceModelData.load_npz(bad)
    data = random_face_model_data(seed=9)
    arrays = data.to_arrays()
    arrays["lbs_weights"] = arrays["lbs_weights"][:, :4]
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(ValueError, match="lbs_weights has shape"):
        FaceModelData.load_npz(tmp_path / "shape.npz")
    arrays = data.to_arrays()
    del arrays["region__lips"]
    np.savez(tmp_path / "regions.npz", **arrays)
    with pytest.raises(ValueError, match="lips"):
        FaceModelData.load_npz(tmp_path / "regions.npz")
    with pytest.raises(ValueError, match="unknown face model file type"):
        load_face_model(tmp_path / "model.obj")


def test_validation_messages():
    data = random_face_model_data(seed=10)
    kw = {k: getattr(data, k) for k in data.__dataclass_fields__}
    with pytest.raises(ValueError, match="parents\\[0\\] must be -1"):
        FaceModelData(**{**kw, "parents": np.array([0, 0, 1, 1, 1])})
    with pytest.raises(ValueError, match="posedirs has shape"):
        FaceModelData(**{**kw, "posedirs": np.zeros((35, data.num_vertices * 3))})
    with pytest.raises(ValueError, match="faces index vertices"):
        FaceModelData(**{**kw, "faces": data.faces + data.num_vertices})


def test_starter_model_is_bit_identical_whatever_the_blas_thread_count():
    """A checkpoint trained in a Ray worker (OMP_NUM_THREADS=1) must match the starter model of a plain
    multi-threaded process: the face-model fingerprint hashes the bases' bytes."""
    import os
    import subprocess
    import sys

    code = ("from avface.face_model import FaceModel, load_face_model\n"
            "from avface.trained.contract import face_model_fingerprint\n"
            "print(face_model_fingerprint(FaceModel(load_face_model(None))))\n")
    prints = []
    for threads in ("1", "2", "4"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        prints.append(res.stdout.strip().splitlines()[-1])
    assert len(set(prints)) == 1, f"fingerprints under 1/2/4 BLAS threads: {prints}"

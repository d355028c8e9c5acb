"""Real-FLAME loader on FLAME-structured pickles written here (chumpy-like objects, sparse J_regressor), landmark
embeddings (DECA .npy with torch tensors, .npz, FLAME .pkl), UV template / cylindrical UVs, masks, and errors for
missing, truncated, wrong and malicious files."""

import io
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from avface.face_model import FaceModel, load_face_model
from avface.face_model.flame_loader import load_flame, load_landmark_embedding
from avface.face_model.testing import random_face_model_data, reference_flame_numpy
from avface.utils.safe_pickle import UnsafePickleError, restricted_load


@pytest.fixture
def fake_chumpy(monkeypatch):
    """A class importable as ``chumpy.ch.Ch`` so that pickles reference it, as FLAME's do."""
    chumpy = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")

    from avface.face_model.testing import ChumpyCh as Ch  # named chumpy.ch.Ch, with chumpy's leaf __dict__

    ch_mod.Ch = Ch
    chumpy.ch = ch_mod
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    return Ch


def _flame_dict(Ch, data):
    """FLAME's pickle layout for the arrays of a FaceModelData (shapedirs = shape + expression)."""
    V = data.num_vertices
    posedirs = data.posedirs.T.reshape(V, 3, -1)  # FLAME stores (V, 3, 36)
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32)
    return {
        "v_template": Ch(data.v_template),
        "shapedirs": Ch(np.concatenate([data.shapedirs, data.exprdirs], axis=2)),
        "posedirs": posedirs.astype(np.float64),
        "J_regressor": sp.csc_matrix(data.J_regressor.astype(np.float64)),
        "J": data.J_regressor @ data.v_template,
        "weights": Ch(data.lbs_weights),
        "kintree_table": kintree,
        "f": data.faces.astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def _write_model(tmp_path, fake_chumpy, monkeypatch, n_shape=301, n_expression=4):
    data = random_face_model_data(seed=11, n_shape=n_shape, n_expression=n_expression)
    blob = pickle.dumps(_flame_dict(fake_chumpy, data), protocol=2)
    assert b"chumpy.ch" in blob and b"csc_matrix" in blob
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(blob)
    emb = tmp_path / "emb.npz"
    np.savez(emb, full_lmk_faces_idx=data.lmk68_faces[None], full_lmk_b_coords=data.lmk68_bary[None],
             dynamic_lmk_faces_idx=data.dynamic_lmk_faces, dynamic_lmk_b_coords=data.dynamic_lmk_bary,
             lmk_faces_idx=data.lmk68_faces[17:], lmk_b_coords=data.lmk68_bary[17:])
    # The loader must not need chumpy itself.
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    return data, path, emb


def test_load_flame_pickle_with_chumpy_and_sparse(tmp_path, fake_chumpy, monkeypatch):
    data, path, emb = _write_model(tmp_path, fake_chumpy, monkeypatch)
    flame = load_flame(path, landmark_embedding=emb)
    np.testing.assert_allclose(flame.v_template, data.v_template, atol=1e-7)
    assert flame.shapedirs.shape == (data.num_vertices, 3, 300)
    assert flame.exprdirs.shape == (data.num_vertices, 3, data.n_shape + data.n_expression - 300)
    np.testing.assert_allclose(flame.shapedirs, data.shapedirs[:, :, :300], atol=1e-7)
    np.testing.assert_allclose(flame.exprdirs[:, :, 1:], data.exprdirs, atol=1e-7)
    np.testing.assert_allclose(flame.posedirs, data.posedirs, atol=1e-7)
    np.testing.assert_allclose(flame.J_regressor, data.J_regressor, atol=1e-7)
    np.testing.assert_array_equal(flame.parents, [-1, 0, 1, 1, 1])
    np.testing.assert_array_equal(flame.faces, data.faces)
    np.testing.assert_array_equal(flame.lmk68_faces, data.lmk68_faces)
    np.testing.assert_array_equal(flame.dynamic_lmk_faces, data.dynamic_lmk_faces)
    assert flame.uv_coords.min() >= 0 and flame.uv_coords.max() <= 1  # cylindrical fallback
    assert flame.n_semantic_expression == 0  # FLAME's expression space is a PCA: no named bases
    for r in ("face", "lips", "lip_upper", "lip_lower", "eye_left", "eye_right", "brow_left", "brow_right", "nose"):
        assert r in flame.regions
    # The loaded model poses exactly like the independent reference on the original arrays.
    model = FaceModel(flame, n_shape=300, n_expression=5).double()
    g = torch.Generator().manual_seed(0)
    shape = torch.randn(1, 300, generator=g, dtype=torch.float64)
    expr = torch.randn(1, 5, generator=g, dtype=torch.float64)
    pose = 0.3 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    out = model(shape, expr, pose[0:1], pose[1:2], pose[2:3], pose[3:5].reshape(1, 6))
    full = np.concatenate([data.shapedirs, data.exprdirs], axis=2)
    ref_data = type(data)(**{**{k: getattr(data, k) for k in data.__dataclass_fields__},
                             "shapedirs": full[:, :, :300], "exprdirs": full[:, :, 300:]})
    ref_v, _ = reference_flame_numpy(ref_data, shape[0].numpy(), expr[0].numpy(), pose.numpy())
    np.testing.assert_allclose(out.vertices[0].numpy(), ref_v, atol=1e-6)
    # load_face_model dispatches .pkl to the FLAME loader
    assert load_face_model(path, landmark_embedding=emb).equals(flame)


def test_landmark_embedding_found_next_to_model_and_masks(tmp_path, fake_chumpy, monkeypatch):
    data, path, emb = _write_model(tmp_path, fake_chumpy, monkeypatch)
    with pytest.raises(ValueError, match="landmark_embedding"):
        load_flame(path)
    # DECA's file: a pickled dict inside an .npy, dynamic arrays as torch tensors.
    deca = {
        "static_lmk_faces_idx": data.lmk68_faces[17:], "static_lmk_bary_coords": data.lmk68_bary[17:],
        "dynamic_lmk_faces_idx": torch.from_numpy(data.dynamic_lmk_faces),
        "dynamic_lmk_bary_coords": torch.from_numpy(data.dynamic_lmk_bary.astype(np.float64)),
        "full_lmk_faces_idx": data.lmk68_faces[None], "full_lmk_bary_coords": data.lmk68_bary[None],
    }
    np.save(tmp_path / "landmark_embedding.npy", np.array(deca, dtype=object), allow_pickle=True)
    masks = {"lips": np.arange(3), "face": np.arange(10), "left_eyeball": np.array([5, 6])}
    (tmp_path / "FLAME_masks.pkl").write_bytes(pickle.dumps(masks, protocol=2))
    flame = load_flame(path)
    np.testing.assert_array_equal(flame.lmk68_faces, data.lmk68_faces)
    np.testing.assert_allclose(flame.dynamic_lmk_bary, data.dynamic_lmk_bary, atol=1e-7)
    np.testing.assert_array_equal(flame.regions["lips"], [0, 1, 2])
    np.testing.assert_array_equal(flame.regions["face"], np.arange(10))
    assert {5, 6} <= set(flame.regions["eye_left"].tolist())


def test_landmark_embedding_static51_plus_contour(tmp_path):
    data = random_face_model_data(seed=12)
    p = tmp_path / "flame_embedding.pkl"
    p.write_bytes(pickle.dumps({"lmk_face_idx": data.lmk68_faces[17:], "lmk_b_coords": data.lmk68_bary[17:],
                                "dynamic_lmk_faces_idx": data.dynamic_lmk_faces,
                                "dynamic_lmk_bary_coords": data.dynamic_lmk_bary}, protocol=2))
    emb = load_landmark_embedding(p)
    np.testing.assert_array_equal(emb["lmk68_faces"][:17], data.dynamic_lmk_faces[0])
    np.testing.assert_array_equal(emb["lmk68_faces"][17:], data.lmk68_faces[17:])
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(ValueError, match="full_lmk_faces_idx"):
        load_landmark_embedding(bad)


def test_embedding_with_faces_outside_the_model_names_the_embedding(tmp_path, fake_chumpy, monkeypatch):
    data, path, _ = _write_model(tmp_path, fake_chumpy, monkeypatch)
    n = len(data.faces)
    cases = {
        "dyn_beyond.npz": (data.lmk68_faces, data.dynamic_lmk_faces + n),
        "static_negative.npz": (np.where(np.arange(68) == 30, -1, data.lmk68_faces), data.dynamic_lmk_faces),
    }
    for name, (static, dynamic) in cases.items():
        emb = tmp_path / name
        np.savez(emb, full_lmk_faces_idx=static[None], full_lmk_b_coords=data.lmk68_bary[None],
                 dynamic_lmk_faces_idx=dynamic, dynamic_lmk_b_coords=data.dynamic_lmk_bary)
        with pytest.raises(ValueError, match=f"{name}.*outside"):
            load_flame(path, landmark_embedding=emb)


def test_uv_template_obj(tmp_path, fake_chumpy, monkeypatch):
    data, path, emb = _write_model(tmp_path, fake_chumpy, monkeypatch)
    rng = np.random.default_rng(0)
    vt = rng.random((len(data.faces) * 3, 2))
    # template triangles rotated (b, c, a) and in reverse order: the loader must match them up
    lines = [f"v {x} {y} {z}" for x, y, z in data.v_template] + [f"vt {u} {v}" for u, v in vt]
    ft = np.arange(len(data.faces) * 3).reshape(-1, 3)
    for k in reversed(range(len(data.faces))):
        a, b, c = data.faces[k] + 1
        ta, tb, tc = ft[k] + 1
        lines.append(f"f {b}/{tb} {c}/{tc} {a}/{ta}")
    (tmp_path / "head_template.obj").write_text("\n".join(lines) + "\n")
    flame = load_flame(path, landmark_embedding=emb)
    np.testing.assert_allclose(flame.uv_coords[flame.uv_faces], vt[ft], atol=1e-6)


def test_missing_truncated_not_pickle_wrong(tmp_path, fake_chumpy, monkeypatch):
    data, path, emb = _write_model(tmp_path, fake_chumpy, monkeypatch)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        load_flame(tmp_path / "missing.pkl", landmark_embedding=emb)
    blob = path.read_bytes()
    trunc = tmp_path / "truncated.pkl"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated.pkl"):
        load_flame(trunc, landmark_embedding=emb)
    text = tmp_path / "text.pkl"
    text.write_text("this is not a pickle\n")
    with pytest.raises(ValueError, match="text.pkl.*not a valid pickle"):
        load_flame(text, landmark_embedding=emb)
    no_keys = tmp_path / "nokeys.pkl"
    no_keys.write_bytes(pickle.dumps({"v_template": np.zeros((5, 3))}, protocol=2))
    with pytest.raises(ValueError, match="nokeys.pkl.*missing keys"):
        load_flame(no_keys, landmark_embedding=emb)
    d = _flame_dict(np.asarray, data)  # plain numpy arrays are valid too
    d["weights"] = d["weights"][:, :3]
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(ValueError, match="wrong.pkl.*weights has shape"):
        load_flame(wrong, landmark_embedding=emb)
    lst = tmp_path / "list.pkl"
    lst.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a dict"):
        load_flame(lst, landmark_embedding=emb)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_malicious_pickles_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    for evil in (_Evil(marker), _EvalEvil()):
        p = tmp_path / "evil.pkl"
        p.write_bytes(pickle.dumps({"v_template": evil}, protocol=2))
        with pytest.raises(UnsafePickleError, match="evil.pkl.*refusing"):
            load_flame(p)
        assert not marker.exists()
    # the same through the .npy landmark path and the raw helper
    npy = tmp_path / "emb.npy"
    np.save(npy, np.array({"x": _Evil(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        load_landmark_embedding(npy)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="subprocess"):
        restricted_load(b"\x80\x02csubprocess\nPopen\nq\x00.")
    assert restricted_load(pickle.dumps({"a": np.arange(3), "s": {1, 2}}, protocol=2))["s"] == {1, 2}
    assert isinstance(restricted_load(io.BytesIO(pickle.dumps(np.eye(2)))), np.ndarray)

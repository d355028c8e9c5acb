"""Small random FLAME-structured models and an independent reference implementation of FLAME skinning, for tests
(here and in other modules) that need a face model without the starter model's size or FLAME's licence, and
:func:`write_flame_like_files`: the starter model written in FLAME 2020's file formats, so that every stage can be
tested on the real-FLAME code path without FLAME itself."""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avface.face_model.data import REQUIRED_REGIONS, FaceModelData
from avface.face_model.loading import load_face_model
from avface.face_model.starter import build_starter_model

__all__ = ["FlameLikeFiles", "random_face_model_data", "reference_flame_numpy", "write_flame_like_files"]


def random_face_model_data(seed: int = 0, n_vertices: int = 64, n_faces: int = 96, n_shape: int = 12,
                           n_expression: int = 8, n_albedo: int = 4, dynamic: bool = True) -> FaceModelData:
    """A random but valid FLAME-structured model: 5 joints in FLAME's tree (parents -1, 0, 1, 1, 1), random
    blendshapes, pose correctives, a dense non-negative J_regressor, normalised skinning weights that use every
    joint, a random landmark embedding (and a dynamic contour table when ``dynamic``), albedo and regions."""
    rng = np.random.default_rng(seed)
    V, J = n_vertices, 5
    v = rng.normal(scale=0.05, size=(V, 3))
    faces = np.stack([rng.choice(V, size=3, replace=False) for _ in range(n_faces)])
    jr = rng.random((J, V)) * (rng.random((J, V)) < 0.2)
    jr[:, 0] += 1e-3
    jr /= jr.sum(1, keepdims=True)
    w = rng.random((V, J)) ** 3
    w /= w.sum(1, keepdims=True)
    bary = rng.random((68, 3))
    bary /= bary.sum(1, keepdims=True)
    kw = {}
    if dynamic:
        db = rng.random((79, 17, 3))
        kw = {"dynamic_lmk_faces": rng.integers(0, n_faces, (79, 17)),
              "dynamic_lmk_bary": db / db.sum(-1, keepdims=True)}
    regions = {r: np.sort(rng.choice(V, size=5, replace=False)) for r in REQUIRED_REGIONS}
    return FaceModelData(
        name=f"random-{seed}",
        v_template=v,
        faces=faces,
        shapedirs=rng.normal(scale=0.01, size=(V, 3, n_shape)),
        exprdirs=rng.normal(scale=0.01, size=(V, 3, n_expression)),
        posedirs=rng.normal(scale=0.01, size=(9 * (J - 1), V * 3)),
        J_regressor=jr,
        parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=w,
        uv_coords=rng.random((V, 2)),
        uv_faces=faces,
        lmk68_faces=rng.integers(0, n_faces, 68),
        lmk68_bary=bary,
        albedo_mean=rng.random((V, 3)),
        albedo_basis=rng.normal(scale=0.05, size=(V, 3, n_albedo)),
        regions=regions,
        **kw,
    )


def reference_flame_numpy(data: FaceModelData, shape: np.ndarray, expression: np.ndarray,
                          pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLAME forward pass for one sample, written independently of :mod:`avface.face_model.lbs` (float64, scipy
    rotations, explicit per-joint world matrices and a per-vertex blending loop).

    shape (NS',), expression (NE',) (first components), pose (5, 3) axis-angle. Returns (vertices (V, 3),
    joints (5, 3)).
    """
    from scipy.spatial.transform import Rotation

    ns, ne = len(shape), len(expression)
    v = (data.v_template.astype(np.float64)
         + data.shapedirs[:, :, :ns].astype(np.float64) @ shape
         + data.exprdirs[:, :, :ne].astype(np.float64) @ expression)
    joints = data.J_regressor.astype(np.float64) @ v
    R = [Rotation.from_rotvec(p).as_matrix() for p in pose]
    feat = np.concatenate([(R[j] - np.eye(3)).reshape(-1) for j in range(1, len(R))])
    v_posed = v + (feat @ data.posedirs.astype(np.float64)).reshape(-1, 3)
    world = []
    for j, p in enumerate(data.parents):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0.0)
        world.append(local if p < 0 else world[p] @ local)
    skin = []
    for j in range(len(world)):
        undo = np.eye(4)
        undo[:3, 3] = -joints[j]
        skin.append(world[j] @ undo)
    out = np.zeros_like(v)
    for i in range(len(v)):
        T = sum(data.lbs_weights[i, j] * skin[j] for j in range(len(skin)))
        out[i] = (T @ np.append(v_posed[i], 1.0))[:3]
    return out, np.stack([w[:3, 3] for w in world])


# ====================================================================================== FLAME-format files
class ChumpyCh:
    """Pickles as ``chumpy.ch.Ch`` with the ``__dict__`` chumpy keeps for a leaf array (its ``__getstate__`` drops
    only caches); the value is under ``x``. No ``chumpy`` module is needed: :class:`_Py2Pickler` names the class
    without importing it."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars = {"x"}
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False


ChumpyCh.__module__ = "chumpy.ch"
ChumpyCh.__name__ = ChumpyCh.__qualname__ = "Ch"

#: Where Python 2 / old numpy / old scipy kept the globals FLAME's pickles reference.
_PY2_MODULES = {"numpy._core.multiarray": "numpy.core.multiarray", "scipy.sparse._csc": "scipy.sparse.csc",
                "builtins": "__builtin__", "copyreg": "copy_reg"}


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Protocol 2 as Python 2 wrote it: ``str`` and ``bytes`` as 8-bit strings (``SHORT_BINSTRING``/``BINSTRING``,
    read back as ``str`` with ``encoding='latin1'``, so array data arrives as a latin-1 ``str`` as with FLAME's
    files) and globals under their Python 2 module names (``numpy.core.multiarray``, ``scipy.sparse.csc``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None) -> None:
        name = name or getattr(obj, "__qualname__", obj.__name__)
        module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)
        module = _PY2_MODULES.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[type] = save_global


def _smooth_fields(rng: np.random.Generator, v: np.ndarray, n: int, rms_m: float) -> np.ndarray:
    """(V, 3, n) smooth displacement fields over the vertices ``v`` (V, 3): each a sum of a few low-frequency
    cosines (wavelengths ~ the face's size) with random directions, scaled to an RMS of ``rms_m`` / sqrt(1 + k / 10)
    metres (decaying like a PCA spectrum)."""
    c = v - v.mean(0)
    out = np.zeros((len(v), 3, n))
    for k in range(n):
        d = np.zeros((len(v), 3))
        for _ in range(3):
            w = rng.normal(scale=1.0 / 0.06, size=3)  # rad / m
            d += rng.normal(size=3)[None] * np.cos(c @ w + rng.uniform(0, 2 * np.pi))[:, None]
        out[:, :, k] = d * (rms_m / np.sqrt(1.0 + k / 10.0)) / max(float(np.sqrt((d**2).sum(1).mean())), 1e-12)
    return out


@dataclass
class FlameLikeFiles:
    """What :func:`write_flame_like_files` wrote, and the model it was made from."""

    model: Path  # generic_model.pkl (FLAME 2020 layout)
    landmark_embedding: Path  # landmark_embedding.npy (DECA layout), next to the model
    source: FaceModelData  # the starter model the files were made from


def write_flame_like_files(directory: str | os.PathLike, seed: int = 0, n_shape: int = 300,
                           n_expression: int = 100) -> FlameLikeFiles:
    """Write the open starter model in FLAME 2020's file formats: a geometrically plausible stand-in for a user's
    ``generic_model.pkl`` + DECA's ``landmark_embedding.npy``, for tests of the real-FLAME code path.

    ``generic_model.pkl`` is a Python-2-style protocol-2 pickle (see :class:`_Py2Pickler`) of a dict with FLAME's
    keys and layouts: ``v_template`` (V, 3), ``shapedirs`` (V, 3, n_shape + n_expression) = the starter's 100
    identity bases then smooth random fields (:func:`_smooth_fields`, ~1 mm) up to ``n_shape``, then the starter's
    50 expression bases then smooth fields up to ``n_expression``; ``posedirs`` (V, 3, 36) (the starter's, all
    zero); ``J_regressor`` a ``scipy.sparse.csc_matrix`` (5, V); ``J`` (5, 3); ``weights`` (V, 5);
    ``kintree_table`` (2, 5) with FLAME's root marker 4294967295; ``f`` (F, 3) uint32; ``bs_style``, ``bs_type``.
    ``v_template``, ``shapedirs``, ``J`` and ``weights`` are chumpy ``Ch`` objects (``chumpy.ch.Ch``, state
    ``{"x": array, ...}``); the other arrays plain numpy, float64 as FLAME's. The mesh has the starter's size (not
    FLAME's 5023 vertices / 9976 faces).

    ``landmark_embedding.npy`` is DECA's layout: a pickled dict in an object .npy with ``static_lmk_faces_idx`` (51,)
    / ``static_lmk_bary_coords`` (51, 3) (numpy), ``dynamic_lmk_faces_idx`` (79, 17) / ``dynamic_lmk_bary_coords``
    (79, 17, 3) (torch tensors) and ``full_lmk_faces_idx`` (1, 68) / ``full_lmk_bary_coords`` (1, 68, 3), all from
    the starter's 68-point embedding. The starter has no yaw-dependent contour: every one of the 79 dynamic rows
    repeats the static jaw points 0-16 (so ``landmarks68_dynamic`` equals ``landmarks68`` for this model).

    The starter's rest vertices, landmarks and (zero-padded) blendshapes round-trip exactly through these files.
    ``seed`` picks the starter model's seed and the extra smooth bases.
    """
    import scipy.sparse as sp
    import torch

    data = load_face_model(None) if seed == 0 else build_starter_model(seed)
    if n_shape < data.n_shape or n_expression < data.n_expression:
        raise ValueError(f"n_shape/n_expression must be >= the starter's {data.n_shape}/{data.n_expression}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2020])
    v = data.v_template.astype(np.float64)
    V = len(v)
    shape = np.concatenate([data.shapedirs, _smooth_fields(rng, v, n_shape - data.n_shape, 1e-3)], axis=2)
    expr = np.concatenate([data.exprdirs, _smooth_fields(rng, v, n_expression - data.n_expression, 5e-4)], axis=2)
    jreg = data.J_regressor.astype(np.float64)
    flame = {
        "v_template": ChumpyCh(v),
        "shapedirs": ChumpyCh(np.concatenate([shape, expr], axis=2)),
        "posedirs": np.ascontiguousarray(data.posedirs.astype(np.float64).T.reshape(V, 3, -1)),
        "J_regressor": sp.csc_matrix(jreg),
        "J": ChumpyCh(jreg @ v),
        "weights": ChumpyCh(data.lbs_weights),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "f": data.faces.astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    model = directory / "generic_model.pkl"
    with open(model, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(flame)

    jaw_f, jaw_b = data.lmk68_faces[:17], data.lmk68_bary[:17].astype(np.float64)
    deca = {
        "static_lmk_faces_idx": data.lmk68_faces[17:].astype(np.int64),
        "static_lmk_bary_coords": data.lmk68_bary[17:].astype(np.float64),
        "dynamic_lmk_faces_idx": torch.from_numpy(np.repeat(jaw_f[None], 79, axis=0)),
        "dynamic_lmk_bary_coords": torch.from_numpy(np.repeat(jaw_b[None], 79, axis=0)),
        "full_lmk_faces_idx": data.lmk68_faces[None].astype(np.int64),
        "full_lmk_bary_coords": data.lmk68_bary[None].astype(np.float64),
    }
    emb = directory / "landmark_embedding.npy"
    np.save(emb, np.array(deca, dtype=object), allow_pickle=True)
    return FlameLikeFiles(model=model, landmark_embedding=emb, source=data)

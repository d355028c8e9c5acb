"""Load the user's real FLAME model (``generic_model.pkl``, FLAME 2020 ``male/female/generic_model.pkl``,
``flame2023.pkl``) into a :class:`~avface.face_model.data.FaceModelData`, safely and without chumpy.

FLAME's pickles were written by Python 2 with chumpy: several arrays are ``chumpy.ch.Ch`` objects and
``J_regressor`` is a ``scipy.sparse`` matrix. ``pickle.load`` would import chumpy (unmaintained, broken on recent
numpy) and, more importantly, a pickle can run arbitrary code. We read it with :class:`RestrictedUnpickler`: only
numpy array reconstruction, a few builtins, scipy sparse matrices and chumpy classes resolve; chumpy and scipy
classes are replaced by stand-ins that just keep the arrays from the pickled state. Anything else (``os.system``,
``subprocess``, ``builtins.eval``...) is refused with :class:`UnsafePickleError` before it can be called.

What is not in the FLAME download, and how we fill it:

- **68-landmark embedding**: pass ``landmark_embedding=`` DECA's ``landmark_embedding.npy`` (a pickled dict inside
  an .npy; read with the same restricted unpickler, never ``allow_pickle=True``), FLAME's
  ``flame_static_embedding.pkl`` (51 points; then the contour comes from the dynamic embedding if present), or an
  ``.npz`` with ``lmk_faces_idx``, ``lmk_b_coords``, ``dynamic_lmk_faces_idx``, ``dynamic_lmk_b_coords``,
  ``full_lmk_faces_idx``, ``full_lmk_b_coords``. If omitted, ``landmark_embedding.npy`` next to the model is used.
- **UVs**: ``uv_template=`` FLAME's ``head_template.obj`` / ``head_template_mesh.obj`` (or found next to the
  model). Without it we generate a cylindrical projection: ``u = 0.5 + atan2(x, z) / (2 pi)`` (face in the middle,
  seam at the back of the head, where the triangles crossing it get duplicated UV vertices and become slivers at
  the u = 1 edge), ``v`` = height normalised to [0, 1]. Good enough for UV-space displacement of the face; use the
  real template for textures.
- **Regions**: ``masks=`` ``FLAME_masks.pkl`` (or found next to the model; restricted unpickle) gives face, lips,
  nose, eye regions + eyeballs. Whatever is missing (always the brows and the upper/lower lip split) is derived
  from the landmark embedding on the template: lips = vertices inside the outer-lip landmark polygon (frontal
  projection, front surface only), split by the inner-lip line; brows = vertices within 8 mm of the brow landmark
  polyline; nose = inside the polygon of landmarks 27, 31-35, dilated by 5 mm; eyes = eye landmark polygons
  dilated by 8 mm plus the vertices skinned to the eye joints; face = inside the hull of the 68 landmarks
  extended up to the forehead.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from avface.face_model.data import FaceModelData
from avface.face_model.starter import point_in_polygon, read_obj

__all__ = [
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_flame",
    "load_landmark_embedding",
    "restricted_load",
]

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle references a class or function that is not on the allow-list (nothing was called)."""


class ChStandIn:
    """Stands in for any ``chumpy`` class: keeps the pickled state; ``.x`` is the array of a leaf ``Ch``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # chumpy's __new__ may be called with args
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        # chumpy's Ch.__getstate__ is its __dict__ minus caches; a leaf Ch keeps its value under "x".
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self, what: str) -> np.ndarray:
        x = self.state.get("x")
        if isinstance(x, ChStandIn):
            return x.to_array(what)
        if x is None:
            raise ValueError(f"{what}: a chumpy expression without a stored value (keys {sorted(self.state)}); "
                             "only plain chumpy arrays are supported")
        return np.asarray(x)


class SparseStandIn:
    """Stands in for ``scipy.sparse`` csc/csr matrices (old pickles name private modules); rebuilt by
    :meth:`to_dense` from ``data``, ``indices``, ``indptr`` and the shape in the pickled ``__dict__``."""

    format = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_dense(self, what: str) -> np.ndarray:
        import scipy.sparse as sp

        st = self.state
        shape = st.get("_shape", st.get("shape"))
        try:
            data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
            cls = sp.csc_matrix if self.format == "csc" else sp.csr_matrix
            return np.asarray(cls((data, indices, indptr), shape=tuple(int(s) for s in shape)).toarray())
        except Exception as e:
            raise ValueError(f"{what}: malformed sparse matrix in pickle ({e})") from e


class CscStandIn(SparseStandIn):
    format = "csc"


class CsrStandIn(SparseStandIn):
    format = "csr"


def _numpy_reconstruct():
    try:
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _load_storage_from_bytes(b: bytes):
    """Replacement for ``torch.storage._load_from_bytes`` (which calls ``torch.load(weights_only=False)``):
    the nested storage is read with ``weights_only=True``."""
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to the text encodings pickle itself uses for bytes objects."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode(encoding)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        mod = module
        if module in ("__builtin__", "copy_reg"):  # Python 2 names
            mod = {"__builtin__": "builtins", "copy_reg": "copyreg"}[module]
        if mod.startswith("chumpy"):
            return ChStandIn
        if mod.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return CscStandIn if name == "csc_matrix" else CsrStandIn
        if mod in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(_numpy_reconstruct(), name)
        if mod == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if mod in ("numpy.dtypes",) and name.endswith("DType"):
            import numpy.dtypes as npd

            cls = getattr(npd, name, None)
            if cls is not None:
                return cls
        if mod == "builtins" and name in ("set", "frozenset", "object", "list", "dict", "tuple", "slice"):
            import builtins

            return getattr(builtins, name)
        if mod == "_codecs" and name == "encode":  # how protocol-2 pickles from Python 3 store bytes
            return _codecs_encode
        if mod == "copyreg" and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if mod == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        # DECA's landmark_embedding.npy holds two torch tensors (plain-pickled).
        if mod == "torch._utils" and name == "_rebuild_tensor_v2":
            import torch._utils

            return torch._utils._rebuild_tensor_v2
        if mod == "torch.storage" and name == "_load_from_bytes":
            return _load_storage_from_bytes
        if mod == "torch" and name.endswith("Storage"):
            import torch

            cls = getattr(torch, name, None)
            if cls is not None:
                return cls
        raise UnsafePickleError(f"refusing to load global {module}.{name} (not on the allow-list)")


def restricted_load(data: bytes | io.BufferedIOBase, what: str = "pickle") -> Any:
    """Unpickle with :class:`RestrictedUnpickler` (``encoding='latin1'`` for Python 2 pickles).

    Raises ``ValueError`` (with ``what`` in the message) for truncated or invalid data and
    :class:`UnsafePickleError` (also a ``pickle.UnpicklingError``) for a forbidden global.
    """
    fh = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return RestrictedUnpickler(fh, encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{what}: {e}") from None
    except EOFError as e:
        raise ValueError(f"{what}: truncated pickle (unexpected end of data)") from e
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError) as e:
        raise ValueError(f"{what}: not a valid pickle ({type(e).__name__}: {e})") from e


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} is not a file: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{what} is empty: {path}")
    return data


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, ChStandIn):
        return value.to_array(what)
    if isinstance(value, SparseStandIn):
        return value.to_dense(what)
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch tensor (DECA embedding)
        return value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"{what}: expected a numeric array, got {type(value).__name__}")
    return arr


# ====================================================================================== landmark embeddings
def _pick(d: dict, names: tuple[str, ...]) -> Any:
    for n in names:
        if n in d:
            return d[n]
    return None


def load_landmark_embedding(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a FLAME landmark embedding (DECA ``landmark_embedding.npy``, FLAME ``*_embedding.pkl``, or ``.npz``).

    Returns a dict with ``lmk68_faces (68,)``, ``lmk68_bary (68, 3)`` and, when present, ``dynamic_lmk_faces
    (79, 17)`` and ``dynamic_lmk_bary (79, 17, 3)``. The 68 static points are the ``full_*`` arrays when the file
    has them, else the yaw-0 row of the dynamic contour followed by the 51 static points.
    """
    path = Path(path)
    what = f"landmark embedding {path}"
    raw: dict[str, Any]
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except Exception as e:
            raise ValueError(f"{what}: not a readable .npz ({type(e).__name__}: {e})") from e
    elif path.suffix.lower() == ".npy":
        data = _read_bytes(path, what)
        fh = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = reader(fh)
        except Exception as e:
            raise ValueError(f"{what}: not a .npy file ({e})") from e
        if not dtype.hasobject:
            raise ValueError(f"{what}: expected a pickled dict inside the .npy, got a {dtype} array {shape}")
        obj = restricted_load(fh, what)
        obj = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1 else obj
        if not isinstance(obj, dict):
            raise ValueError(f"{what}: expected a dict, got {type(obj).__name__}")
        raw = obj
    else:
        obj = restricted_load(_read_bytes(path, what), what)
        if not isinstance(obj, dict):
            raise ValueError(f"{what}: expected a dict, got {type(obj).__name__}")
        raw = obj

    def arr(names: tuple[str, ...], dtype) -> np.ndarray | None:
        v = _pick(raw, names)
        return None if v is None else _as_array(v, f"{what}:{names[0]}").astype(dtype)

    static_f = arr(("static_lmk_faces_idx", "lmk_faces_idx", "lmk_face_idx"), np.int64)
    static_b = arr(("static_lmk_bary_coords", "lmk_b_coords", "lmk_bary_coords"), np.float64)
    dyn_f = arr(("dynamic_lmk_faces_idx",), np.int64)
    dyn_b = arr(("dynamic_lmk_bary_coords", "dynamic_lmk_b_coords"), np.float64)
    full_f = arr(("full_lmk_faces_idx",), np.int64)
    full_b = arr(("full_lmk_bary_coords", "full_lmk_b_coords"), np.float64)

    out: dict[str, np.ndarray] = {}
    if full_f is not None and full_b is not None:
        out["lmk68_faces"] = full_f.reshape(-1)
        out["lmk68_bary"] = full_b.reshape(-1, 3)
    elif static_f is not None and static_b is not None and dyn_f is not None and dyn_b is not None:
        out["lmk68_faces"] = np.concatenate([dyn_f.reshape(-1, 17)[0], static_f.reshape(-1)])
        out["lmk68_bary"] = np.concatenate([dyn_b.reshape(-1, 17, 3)[0], static_b.reshape(-1, 3)])
    else:
        raise ValueError(f"{what}: needs full_lmk_faces_idx/full_lmk_b(ary)_coords, or static 51 + dynamic "
                         f"contour arrays; found keys {sorted(raw)}")
    if out["lmk68_faces"].shape != (68,) or out["lmk68_bary"].shape != (68, 3):
        raise ValueError(f"{what}: the 68-point embedding has shapes {out['lmk68_faces'].shape}, "
                         f"{out['lmk68_bary'].shape}; expected (68,), (68, 3)")
    if dyn_f is not None and dyn_b is not None:
        out["dynamic_lmk_faces"] = dyn_f.reshape(dyn_f.shape[0], 17)
        out["dynamic_lmk_bary"] = dyn_b.reshape(dyn_b.shape[0], 17, 3)
    return out


# ====================================================================================== UVs and regions
def cylindrical_uv(v: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cylindrical UVs: u = 0.5 + atan2(x, z) / (2 pi) about the centroid (face at u = 0.5, seam at the back),
    v = height normalised to [0, 1] (v up).

    v: (V, 3); faces: (F, 3). Returns (uv_coords (VT, 2) in [0, 1], uv_faces (F, 3)): the V per-vertex UVs, then
    one copy at u = 1 of each vertex that a triangle crossing the seam has on the u ~ 0 side. Those triangles
    become thin slivers at the u = 1 edge instead of spanning the whole map (which, as the UV rasterization has
    no depth order, would hide other triangles' texels in ``FaceRenderer.uv_maps``).
    """
    c = v.mean(axis=0)
    u = 0.5 + np.arctan2(v[:, 0] - c[0], v[:, 2] - c[2]) / (2 * np.pi)
    y = v[:, 1]
    vv = (y - y.min()) / max(float(np.ptp(y)), 1e-12)
    uv = np.clip(np.stack([u, vv], 1), 0.0, 1.0)
    uv_faces = np.array(faces, dtype=np.int64, copy=True)
    tri_u = uv[uv_faces, 0]
    seam = np.ptp(tri_u, axis=1) > 0.5
    low = seam[:, None] & (tri_u < 0.5)  # corners of seam triangles on the u ~ 0 side
    if low.any():
        ids = np.unique(uv_faces[low])
        copies = np.stack([np.ones(len(ids)), uv[ids, 1]], 1)
        uv_faces[low] = len(uv) + np.searchsorted(ids, uv_faces[low])
        uv = np.concatenate([uv, copies])
    return uv, uv_faces


def _uv_from_template(obj_path: Path, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v, f, vt, ft = read_obj(obj_path)
    if len(vt) == 0:
        raise ValueError(f"UV template {obj_path} has no texture coordinates")
    if len(f) != len(faces):
        raise ValueError(f"UV template {obj_path} has {len(f)} faces, the model {len(faces)}")
    if np.array_equal(f, faces):
        return vt, ft
    # Same triangles in another order or rotation: match by the sorted vertex triple.
    lookup = {tuple(sorted(t)): (k, t) for k, t in enumerate(f.tolist())}
    uv_faces = np.zeros_like(faces)
    for k, tri in enumerate(faces.tolist()):
        hit = lookup.get(tuple(sorted(tri)))
        if hit is None:
            raise ValueError(f"UV template {obj_path}: triangle {tri} of the model is not in the template")
        j, t = hit
        uv_faces[k] = [ft[j][t.index(i)] for i in tri]
    return vt, uv_faces


def _landmarks_on(v: np.ndarray, f: np.ndarray, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
    return np.einsum("lkc,lk->lc", v[f[faces]], bary)


def _dist_to_polyline(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    a, b = poly[:-1][None], poly[1:][None]
    ab = b - a
    t = np.clip(np.einsum("nkc,nkc->nk", p[:, None] - a, ab) / np.maximum((ab**2).sum(-1), 1e-18), 0, 1)
    return np.linalg.norm(p[:, None] - (a + t[..., None] * ab), axis=-1).min(1)


def derive_regions(v: np.ndarray, f: np.ndarray, lmk_faces: np.ndarray, lmk_bary: np.ndarray,
                   weights: np.ndarray, masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Regions (see the module docstring) from FLAME masks where given, else from the 68-landmark embedding.
    v: (V, 3) template in metres; weights: (V, 5) skinning weights (eyeballs = vertices on the eye joints)."""
    masks = masks or {}
    L = _landmarks_on(v, f, lmk_faces, lmk_bary)
    xy = v[:, :2]
    ids = np.arange(len(v))
    eyeball_left = ids[weights[:, 3] > 0.5]
    eyeball_right = ids[weights[:, 4] > 0.5]
    # "Front" = in front of the plane through the eye corners pushed 3 cm back (excludes the back of the head).
    z_front = L[[36, 45], 2].mean() - 0.03

    def front(mask: np.ndarray) -> np.ndarray:
        return mask & (v[:, 2] > z_front)

    def dilate_poly(poly_ids: list[int], r: float) -> np.ndarray:
        poly = L[poly_ids, :2]
        inside = point_in_polygon(xy, poly)
        closed = np.concatenate([poly, poly[:1]])
        return inside | (_dist_to_polyline(xy, closed) < r)

    out: dict[str, np.ndarray] = {}
    lips = front(dilate_poly(list(range(48, 60)), 0.001))
    mouth_line_y = np.interp(v[:, 0], L[[60, 61, 62, 63, 64], 0], 0.5 * (L[[60, 61, 62, 63, 64], 1]
                                                                      + L[[60, 67, 66, 65, 64], 1]))
    out["lips"] = masks.get("lips", ids[lips])
    lip_ids = out["lips"]
    out["lip_upper"] = lip_ids[v[lip_ids, 1] >= mouth_line_y[lip_ids]]
    out["lip_lower"] = lip_ids[v[lip_ids, 1] < mouth_line_y[lip_ids]]
    out["nose"] = masks.get("nose", ids[front(dilate_poly([27, 31, 32, 33, 34, 35], 0.005))])
    for side, eye_lm, brow_lm, eyeball, mkey in (
            ("right", list(range(36, 42)), list(range(17, 22)), eyeball_right, "right_eye_region"),
            ("left", list(range(42, 48)), list(range(22, 27)), eyeball_left, "left_eye_region")):
        region = masks.get(mkey, ids[front(dilate_poly(eye_lm, 0.008))])
        ball = masks.get(f"{side}_eyeball", eyeball)
        out[f"eye_{side}"] = np.union1d(region, ball)
        out[f"eyeball_{side}"] = np.asarray(ball)
        out[f"brow_{side}"] = ids[front(_dist_to_polyline(v, L[brow_lm]) < 0.008)]
    if "face" in masks:
        out["face"] = masks["face"]
    else:
        hull = np.concatenate([L[0:17, :2], L[[26, 25, 24, 23, 22, 21, 20, 19, 18, 17], :2] + [0.0, 0.04]])
        out["face"] = ids[front(point_in_polygon(xy, hull))]
    # A region the geometric rule leaves empty (unusual meshes) falls back to the vertices nearest its landmarks.
    groups = {"lips": range(48, 68), "lip_upper": range(48, 55), "lip_lower": [48, *range(54, 60)],
              "nose": range(27, 36), "eye_right": range(36, 42), "eye_left": range(42, 48),
              "brow_right": range(17, 22), "brow_left": range(22, 27), "face": range(68)}
    for name, lms in groups.items():
        if len(out[name]) == 0:
            d = np.linalg.norm(v[None] - L[list(lms)][:, None], axis=-1)  # (K, V)
            out[name] = np.unique(d.argmin(axis=1))
    for k, val in masks.items():
        out.setdefault(f"flame_{k}", np.asarray(val))
    return {k: np.unique(np.asarray(val, dtype=np.int64)) for k, val in out.items()}


# ====================================================================================== FLAME
def _find_next_to(path: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        p = path.parent / n
        if p.is_file():
            return p
    return None


def load_flame(
    path: str | os.PathLike,
    landmark_embedding: str | os.PathLike | None = None,
    uv_template: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
) -> FaceModelData:
    """Load a FLAME ``.pkl`` into a :class:`FaceModelData` (all 300 shape and 100 expression components; the
    :class:`~avface.face_model.flame.FaceModel` truncates). See the module docstring for the optional files."""
    path = Path(path)
    what = f"FLAME model {path}"
    obj = restricted_load(_read_bytes(path, what), what)
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a dict of arrays, got {type(obj).__name__}")
    missing = [k for k in FLAME_KEYS if k not in obj]
    if missing:
        raise ValueError(f"{what}: missing keys {missing} (found {sorted(obj)}); is this a FLAME model file?")
    a = {k: _as_array(obj[k], f"{what}:{k}") for k in FLAME_KEYS}

    v = a["v_template"].astype(np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{what}: v_template has shape {v.shape}, expected (V, 3)")
    V = v.shape[0]

    def expect(key: str, shape: tuple) -> None:
        s = a[key].shape
        if len(s) != len(shape) or any(e is not None and x != e for x, e in zip(s, shape, strict=True)):
            want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
            raise ValueError(f"{what}: {key} has shape {s}, expected {want}")

    expect("shapedirs", (V, 3, None))
    expect("posedirs", (V, 3, None))
    expect("J_regressor", (None, V))
    J = a["J_regressor"].shape[0]
    expect("weights", (V, J))
    expect("kintree_table", (2, J))
    expect("f", (None, 3))
    if J != 5:
        raise ValueError(f"{what}: {J} joints, FLAME has 5 (global, neck, jaw, eye_left, eye_right)")
    if a["posedirs"].shape[2] != 9 * (J - 1):
        raise ValueError(f"{what}: posedirs has {a['posedirs'].shape[2]} pose features, expected {9 * (J - 1)}")
    n_dirs = a["shapedirs"].shape[2]
    if n_dirs <= 300:
        raise ValueError(f"{what}: shapedirs has {n_dirs} components; FLAME 2020+ has 300 shape + 100 expression")
    faces = a["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= V:
        raise ValueError(f"{what}: faces index vertices outside [0, {V})")

    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # stored as uint32 max
    # smplx layout: (V, 3, P) -> (P, V * 3) so the pose feature multiplies it directly.
    posedirs = a["posedirs"].reshape(-1, a["posedirs"].shape[2]).T

    emb_path = Path(landmark_embedding) if landmark_embedding is not None else _find_next_to(
        path, ("landmark_embedding.npy", "landmark_embedding.npz"))
    if emb_path is None:
        raise ValueError(f"{what}: FLAME files carry no landmark embedding; pass landmark_embedding= (DECA's "
                         f"data/landmark_embedding.npy, or an .npz with full_lmk_faces_idx/full_lmk_b_coords)")
    emb = load_landmark_embedding(emb_path)
    for key in ("lmk68_faces", "dynamic_lmk_faces"):
        ids = emb.get(key)
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= len(faces)):
            raise ValueError(f"landmark embedding {emb_path}: {key} indexes faces outside the model's "
                             f"[0, {len(faces)})")

    uv_path = Path(uv_template) if uv_template is not None else _find_next_to(
        path, ("head_template.obj", "head_template_mesh.obj"))
    if uv_path is not None:
        if not uv_path.is_file():
            raise FileNotFoundError(f"UV template not found: {uv_path}")
        uv_coords, uv_faces = _uv_from_template(uv_path, faces)
    else:
        uv_coords, uv_faces = cylindrical_uv(v, faces)

    mask_path = Path(masks) if masks is not None else _find_next_to(path, ("FLAME_masks.pkl",))
    mask_dict: dict[str, np.ndarray] = {}
    if mask_path is not None:
        m = restricted_load(_read_bytes(mask_path, f"FLAME masks {mask_path}"), f"FLAME masks {mask_path}")
        if not isinstance(m, dict):
            raise ValueError(f"FLAME masks {mask_path}: expected a dict, got {type(m).__name__}")
        mask_dict = {str(k): _as_array(val, f"FLAME masks {mask_path}:{k}").astype(np.int64).reshape(-1)
                     for k, val in m.items()}
    weights = a["weights"].astype(np.float64)
    regions = derive_regions(v, faces, emb["lmk68_faces"], emb["lmk68_bary"], weights, mask_dict)

    return FaceModelData(
        name=f"flame:{path.name}",
        v_template=v,
        faces=faces,
        shapedirs=a["shapedirs"][:, :, :300],
        exprdirs=a["shapedirs"][:, :, 300:],
        posedirs=posedirs,
        J_regressor=a["J_regressor"],
        parents=parents,
        lbs_weights=weights,
        uv_coords=uv_coords,
        uv_faces=uv_faces,
        lmk68_faces=emb["lmk68_faces"],
        lmk68_bary=emb["lmk68_bary"],
        dynamic_lmk_faces=emb.get("dynamic_lmk_faces"),
        dynamic_lmk_bary=emb.get("dynamic_lmk_bary"),
        regions=regions,
    )

"""Load the user's real FLAME model (``generic_model.pkl``, FLAME 2020 ``male/female/generic_model.pkl``,
``flame2023.pkl``) into a :class:`~avface.face_model.data.FaceModelData`, safely and without chumpy.

FLAME's pickles were written by Python 2 with chumpy: several arrays are ``chumpy.ch.Ch`` objects and
``J_regressor`` is a ``scipy.sparse`` matrix. ``pickle.load`` would import chumpy (unmaintained, broken on recent
numpy) and, more importantly, a pickle can run arbitrary code. We read it with
:func:`avface.utils.safe_pickle.restricted_load`: only numpy array reconstruction, a few builtins, scipy sparse
matrices and chumpy classes resolve; chumpy and scipy classes are replaced by stand-ins that just keep the arrays
from the pickled state. Anything else (``os.system``, ``subprocess``, ``builtins.eval``...) is refused with
:class:`~avface.utils.safe_pickle.UnsafePickleError` before it can be called.

What is not in the FLAME download, and how we fill it:

- **68-landmark embedding**: pass ``landmark_embedding=`` DECA's ``landmark_embedding.npy`` (a pickled dict inside
  an .npy; read with the same restricted unpickler, never ``allow_pickle=True``), FLAME's
  ``flame_static_embedding.pkl`` (51 points; then the contour comes from the dynamic embedding if present), or an
  ``.npz`` with ``lmk_faces_idx``, ``lmk_b_coords``, ``dynamic_lmk_faces_idx``, ``dynamic_lmk_b_coords``,
  ``full_lmk_faces_idx``, ``full_lmk_b_coords``. If omitted, ``landmark_embedding.npy`` next to the model is used.
- **UVs**: ``uv_template=`` FLAME's ``head_template.obj`` / ``head_template_mesh.obj`` (or found next to the
  model). Without it we generate a cylindrical projection: ``u = 0.5 + atan2(x, z) / (2 pi)`` (face in the middle,
  seam at the back of the head, where the triangles crossing it get duplicated UV vertices and become slivers at
  the u = 1 edge), ``v`` = height normalised to [0, 1] (:mod:`avface.face_model.uv`). Good enough for UV-space
  displacement of the face; use the real template for textures.
- **Regions**: ``masks=`` ``FLAME_masks.pkl`` (or found next to the model; restricted unpickle) gives face, lips,
  nose, eye regions + eyeballs. Whatever is missing (always the brows and the upper/lower lip split) is derived
  (:mod:`avface.face_model.regions`) from the landmark embedding on the template: lips = vertices inside the
  outer-lip landmark polygon (frontal projection, front surface only), split by the inner-lip line; brows =
  vertices within 8 mm of the brow landmark polyline; nose = inside the polygon of landmarks 27, 31-35, dilated by
  5 mm; eyes = eye landmark polygons dilated by 8 mm plus the vertices skinned to the eye joints; face = inside
  the hull of the 68 landmarks extended up to the forehead.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from avface.face_model.data import FaceModelData
from avface.face_model.regions import derive_regions
from avface.face_model.uv import cylindrical_uv, uv_from_template
from avface.utils.safe_pickle import as_array, restricted_load

__all__ = ["load_flame", "load_landmark_embedding"]

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} is not a file: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{what} is empty: {path}")
    return data


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
        return None if v is None else as_array(v, f"{what}:{names[0]}").astype(dtype)

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
    a = {k: as_array(obj[k], f"{what}:{k}") for k in FLAME_KEYS}

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
        uv_coords, uv_faces = uv_from_template(uv_path, faces)
    else:
        uv_coords, uv_faces = cylindrical_uv(v, faces)

    mask_path = Path(masks) if masks is not None else _find_next_to(path, ("FLAME_masks.pkl",))
    mask_dict: dict[str, np.ndarray] = {}
    if mask_path is not None:
        m = restricted_load(_read_bytes(mask_path, f"FLAME masks {mask_path}"), f"FLAME masks {mask_path}")
        if not isinstance(m, dict):
            raise ValueError(f"FLAME masks {mask_path}: expected a dict, got {type(m).__name__}")
        mask_dict = {str(k): as_array(val, f"FLAME masks {mask_path}:{k}").astype(np.int64).reshape(-1)
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
        n_semantic_expression=0,  # FLAME's expression space is a PCA: no named bases
    )

"""`FaceModelData`: the arrays that define a FLAME-structured morphable face model, and their `.npz` file format.

Everything a :class:`~avface.face_model.flame.FaceModel` needs lives here as plain numpy arrays, so the same
container holds the real FLAME (loaded by :mod:`avface.face_model.flame_loader`) and the open starter model
(built by :mod:`avface.face_model.starter`). Shapes (V vertices, F faces, J = 5 joints, P = 9 * (J - 1)):

- ``v_template (V, 3) f32`` metres, +y up, +z towards the viewer, +x to the subject's left;
- ``faces (F, 3) i64``; ``shapedirs (V, 3, NS)``; ``exprdirs (V, 3, NE)``; ``posedirs (P, V * 3)``;
- ``J_regressor (J, V)`` dense; ``parents (J,) i64`` with ``parents[0] == -1``; ``lbs_weights (V, J)``;
- ``uv_coords (VT, 2)`` in [0, 1] (v up); ``uv_faces (F, 3)`` indexes ``uv_coords``;
- ``lmk68_faces (68,) i64`` and ``lmk68_bary (68, 3)``: static iBUG-68 embedding (face index + barycentrics);
- optional ``dynamic_lmk_faces (79, 17)`` / ``dynamic_lmk_bary (79, 17, 3)``: DECA's yaw-dependent jaw contour;
- optional ``albedo_mean (V, 3)`` in [0, 1] and ``albedo_basis (V, 3, NA)``;
- ``regions``: name -> (K,) i64 vertex ids; at least :data:`REQUIRED_REGIONS`;
- ``n_semantic_expression``: how many leading expression bases are named, semantic ones (the starter model's
  ``EXPRESSION_NAMES``, which the synthetic mouth rig drives); 0 for FLAME, whose expression space is a PCA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avface.utils.files import atomic_path

__all__ = ["FaceModelData", "JOINT_NAMES", "REQUIRED_REGIONS", "NOW7_FROM_68"]

#: FLAME's joint order.
JOINT_NAMES: tuple[str, ...] = ("global", "neck", "jaw", "eye_left", "eye_right")
#: Regions every model must provide (users: lip refiner, occlusion synthesis, losses).
REQUIRED_REGIONS: tuple[str, ...] = (
    "face", "lips", "lip_upper", "lip_lower", "eye_left", "eye_right", "brow_left", "brow_right", "nose",
)
#: NoW's 7 landmarks as iBUG-68 ids: right eye outer/inner, left eye inner/outer, subnasale, mouth corners.
NOW7_FROM_68: tuple[int, ...] = (36, 39, 42, 45, 33, 48, 54)

_REGION_PREFIX = "region__"
_FORMAT_VERSION = 1
_OPTIONAL = ("dynamic_lmk_faces", "dynamic_lmk_bary", "albedo_mean", "albedo_basis")
#: ``.npz`` files written before ``n_semantic_expression`` was stored: the starter model (its name's prefix) named
#: its first 13 expression bases (``starter.EXPRESSION_NAMES``; tests/test_starter_model.py checks they agree)
_LEGACY_STARTER_PREFIX, _LEGACY_STARTER_SEMANTIC = "avface-starter", 13


@dataclass
class FaceModelData:
    """Arrays of a FLAME-structured face model (see the module docstring for shapes and units)."""

    name: str
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    uv_coords: np.ndarray
    uv_faces: np.ndarray
    lmk68_faces: np.ndarray
    lmk68_bary: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    dynamic_lmk_faces: np.ndarray | None = None
    dynamic_lmk_bary: np.ndarray | None = None
    albedo_mean: np.ndarray | None = None
    albedo_basis: np.ndarray | None = None
    n_semantic_expression: int = 0

    def __post_init__(self) -> None:
        # Normalise dtypes once so every consumer can rely on them (f32 geometry, i64 indices).
        f32 = ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "lbs_weights", "uv_coords",
               "lmk68_bary", "dynamic_lmk_bary", "albedo_mean", "albedo_basis")
        i64 = ("faces", "parents", "uv_faces", "lmk68_faces", "dynamic_lmk_faces")
        for k in f32:
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, np.ascontiguousarray(np.asarray(v, dtype=np.float32)))
        for k in i64:
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, np.ascontiguousarray(np.asarray(v, dtype=np.int64)))
        self.regions = {str(k): np.ascontiguousarray(np.asarray(v, dtype=np.int64)) for k, v in self.regions.items()}
        self.n_semantic_expression = int(self.n_semantic_expression)
        self.validate()

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.J_regressor.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_expression(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def n_albedo(self) -> int:
        return 0 if self.albedo_basis is None else int(self.albedo_basis.shape[2])

    @property
    def has_albedo(self) -> bool:
        return self.albedo_mean is not None and self.albedo_basis is not None

    @property
    def has_dynamic_landmarks(self) -> bool:
        return self.dynamic_lmk_faces is not None and self.dynamic_lmk_bary is not None

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first array whose shape or content breaks the contract."""
        name = self.name

        def fail(msg: str) -> None:
            raise ValueError(f"FaceModelData {name!r}: {msg}")

        def check(key: str, expected: tuple) -> None:
            arr = getattr(self, key)
            if arr.ndim != len(expected) or any(e is not None and s != e for s, e in zip(arr.shape, expected,
                                                                                          strict=True)):
                want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
                fail(f"{key} has shape {arr.shape}, expected {want}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                fail(f"{key} contains NaN or inf")

        check("v_template", (None, 3))
        V = self.num_vertices
        if V < 3:
            fail("v_template needs at least 3 vertices")
        check("faces", (None, 3))
        Fn = self.num_faces
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            fail(f"faces index vertices outside [0, {V})")
        check("shapedirs", (V, 3, None))
        check("exprdirs", (V, 3, None))
        check("J_regressor", (None, V))
        J = self.num_joints
        if J < 1:
            fail("J_regressor has no joints")
        check("posedirs", (9 * (J - 1), V * 3))
        check("parents", (J,))
        if self.parents[0] != -1:
            fail(f"parents[0] must be -1 (root), got {self.parents[0]}")
        if J > 1 and not all(0 <= self.parents[j] < j for j in range(1, J)):
            fail(f"parents must be topologically ordered (0 <= parents[j] < j), got {self.parents.tolist()}")
        check("lbs_weights", (V, J))
        check("uv_coords", (None, 2))
        check("uv_faces", (Fn, 3))
        if self.uv_faces.size and (self.uv_faces.min() < 0 or self.uv_faces.max() >= len(self.uv_coords)):
            fail("uv_faces index outside uv_coords")
        check("lmk68_faces", (68,))
        check("lmk68_bary", (68, 3))
        if self.lmk68_faces.min() < 0 or self.lmk68_faces.max() >= Fn:
            fail("lmk68_faces index faces outside the mesh")
        if (self.dynamic_lmk_faces is None) != (self.dynamic_lmk_bary is None):
            fail("dynamic_lmk_faces and dynamic_lmk_bary must be given together")
        if self.dynamic_lmk_faces is not None:
            check("dynamic_lmk_faces", (None, 17))
            check("dynamic_lmk_bary", (self.dynamic_lmk_faces.shape[0], 17, 3))
            if self.dynamic_lmk_faces.min() < 0 or self.dynamic_lmk_faces.max() >= Fn:
                fail("dynamic_lmk_faces index faces outside the mesh")
        if (self.albedo_mean is None) != (self.albedo_basis is None):
            fail("albedo_mean and albedo_basis must be given together")
        if self.albedo_mean is not None:
            check("albedo_mean", (V, 3))
            check("albedo_basis", (V, 3, None))
        if not 0 <= self.n_semantic_expression <= self.n_expression:
            fail(f"n_semantic_expression {self.n_semantic_expression} outside [0, {self.n_expression}]")
        missing = [r for r in REQUIRED_REGIONS if r not in self.regions]
        if missing:
            fail(f"missing regions {missing}")
        for r, ids in self.regions.items():
            if ids.ndim != 1 or ids.size == 0:
                fail(f"region {r!r} must be a non-empty 1-D array of vertex ids, got shape {ids.shape}")
            if ids.min() < 0 or ids.max() >= V:
                fail(f"region {r!r} has vertex ids outside [0, {V})")

    # ------------------------------------------------------------------ io
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict of arrays (regions as ``region__<name>``), the `.npz` layout."""
        out: dict[str, np.ndarray] = {
            "format_version": np.asarray(_FORMAT_VERSION, dtype=np.int64),
            "name": np.asarray(self.name),
            "n_semantic_expression": np.asarray(self.n_semantic_expression, dtype=np.int64),
        }
        for k in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "parents",
                  "lbs_weights", "uv_coords", "uv_faces", "lmk68_faces", "lmk68_bary", *_OPTIONAL):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        for r, ids in self.regions.items():
            out[_REGION_PREFIX + r] = ids
        return out

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (compressed `.npz`, atomic). Returns the path."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **self.to_arrays())
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> FaceModelData:
        """Read a model written by :meth:`save_npz` (``allow_pickle=False``: a model file can never run code)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"face model file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile/pickle/format errors all mean "not a model file"
            raise ValueError(f"{path}: not a readable face-model .npz ({type(e).__name__}: {e})") from e
        version = int(arrays.pop("format_version", _FORMAT_VERSION))
        if version > _FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {version} is newer than this code ({_FORMAT_VERSION})")
        regions = {k[len(_REGION_PREFIX):]: arrays.pop(k) for k in list(arrays) if k.startswith(_REGION_PREFIX)}
        name = str(arrays.pop("name", path.stem))
        legacy = _LEGACY_STARTER_SEMANTIC if name.startswith(_LEGACY_STARTER_PREFIX) else 0
        n_semantic = int(arrays.pop("n_semantic_expression", legacy))
        required = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "parents",
                    "lbs_weights", "uv_coords", "uv_faces", "lmk68_faces", "lmk68_bary")
        missing = [k for k in required if k not in arrays]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        kwargs = {k: arrays[k] for k in (*required, *_OPTIONAL) if k in arrays}
        try:
            return cls(name=name, regions=regions, n_semantic_expression=n_semantic, **kwargs)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def equals(self, other: FaceModelData) -> bool:
        """Exact equality of every array, region, the name and the semantic expression count."""
        a, b = self.to_arrays(), other.to_arrays()
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

"""Which face model to use: the dispatcher above the two loaders (the open starter model and the real FLAME)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from avface.face_model.data import FaceModelData
from avface.face_model.flame_loader import load_flame

__all__ = ["STARTER_MODEL_FILE", "load_face_model"]

# The starter model as shipped (``scripts/build_starter_model.py`` writes it): built once and read as bytes, because
# the recipe's floating-point results differ in the last bits between CPUs and checkpoints record the exact geometry.
STARTER_MODEL_FILE = Path(__file__).resolve().parents[1] / "assets" / "starter_model" / "avface-starter-v1-seed0.npz"

_CACHE: dict[object, FaceModelData] = {}
_LOCK = threading.Lock()


def load_face_model(path_or_none: str | os.PathLike | None = None, **kwargs) -> FaceModelData:
    """The face model to use: ``None`` -> the starter model (:data:`STARTER_MODEL_FILE`, read once per process and
    cached; the same bytes on every machine); a ``.pkl`` path ->
    the real FLAME via :func:`avface.face_model.flame_loader.load_flame` (``kwargs`` are passed on, e.g.
    ``landmark_embedding``); a ``.npz`` path -> a saved :class:`FaceModelData`. Returned objects are shared with
    the cache: treat them as read-only."""
    if path_or_none is None:
        key: object = ("starter", 0)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = FaceModelData.load_npz(STARTER_MODEL_FILE)
            return _CACHE[key]
    path = Path(path_or_none)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return FaceModelData.load_npz(path)
    if suffix == ".pkl":
        return load_flame(path, **kwargs)
    raise ValueError(f"{path}: unknown face model file type {suffix!r} (expected .pkl for FLAME or .npz)")

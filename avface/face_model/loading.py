"""Which face model to use: the dispatcher above the two loaders (the open starter model and the real FLAME)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from avface.face_model.data import FaceModelData
from avface.face_model.flame_loader import load_flame
from avface.face_model.starter import build_starter_model

__all__ = ["load_face_model"]

_CACHE: dict[object, FaceModelData] = {}
_LOCK = threading.Lock()


def load_face_model(path_or_none: str | os.PathLike | None = None, **kwargs) -> FaceModelData:
    """The face model to use: ``None`` -> the starter model (built once per process and cached); a ``.pkl`` path ->
    the real FLAME via :func:`avface.face_model.flame_loader.load_flame` (``kwargs`` are passed on, e.g.
    ``landmark_embedding``); a ``.npz`` path -> a saved :class:`FaceModelData`. Returned objects are shared with
    the cache: treat them as read-only."""
    if path_or_none is None:
        key: object = ("starter", 0)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = build_starter_model(0)
            return _CACHE[key]
    path = Path(path_or_none)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return FaceModelData.load_npz(path)
    if suffix == ".pkl":
        return load_flame(path, **kwargs)
    raise ValueError(f"{path}: unknown face model file type {suffix!r} (expected .pkl for FLAME or .npz)")

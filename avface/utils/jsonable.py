"""numpy values in JSON: one ``default=`` hook for ``json.dumps`` (sample metadata, sidecars, occlusion params)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["json_default", "to_jsonable"]


def json_default(o: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars -> Python scalars, arrays -> nested lists, paths ->
    strings; anything else is an error (never silently stringified)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (dicts, lists, str, numbers, bool, None), via :func:`json_default`."""
    return json.loads(json.dumps(obj, default=json_default))

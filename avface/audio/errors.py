"""Errors of the audio feature extractors, and the check that a user-provided model file is there."""

from __future__ import annotations

import os
from pathlib import Path


class AudioFeatureError(RuntimeError):
    """An audio feature could not be computed (bad input, missing optional dependency)."""


class MissingModelError(AudioFeatureError, FileNotFoundError):
    """A user-provided model file is missing; the message says which file and where to put it."""


def resolve_model_file(path: str | os.PathLike | None, default: str, what: str, hint: str) -> Path:
    """The existing model file at ``path`` (``~`` expanded; ``default`` when None or empty).

    ``hint`` may contain ``{path}``; it is appended to the error so the user knows where to put the file.
    Raises MissingModelError when the file does not exist.
    """
    p = Path(os.path.expanduser(str(path or default)))
    if not p.is_file():
        raise MissingModelError(f"{what} not found: {p}. " + hint.format(path=p))
    return p

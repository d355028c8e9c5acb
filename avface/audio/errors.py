"""Errors of the audio feature extractors."""


class AudioFeatureError(RuntimeError):
    """An audio feature could not be computed (bad input, missing optional dependency)."""


class MissingModelError(AudioFeatureError, FileNotFoundError):
    """A user-provided model file is missing; the message says which file and where to put it."""

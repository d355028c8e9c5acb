"""Typed configs from plain mappings: the one way the project turns a (partial) dict into nested dataclasses.

Every config (``AVFaceConfig``, ``PreprocessConfig``, ``SynthesizeConfig``, ``OcclusionConfig``) is rebuilt with
:func:`dataclass_from_dict` from Hydra/OmegaConf nodes, JSON (``params["config"]``) or Ray task payloads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Any, *, path: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, recursively over nested dataclass fields.

    Args:
        cls: a dataclass type.
        data: None (all defaults), a mapping (possibly partial), an instance of a dataclass, or an OmegaConf
            DictConfig (resolved).
        path: dotted location of ``data`` in the outer config, only used in error messages.
    Returns:
        ``cls`` instance; keys missing from ``data`` take the defaults of ``cls``. Lists become tuples where
        the annotation is a tuple and tuples become lists where it is a list (YAML/JSON only know lists).
    Raises:
        ValueError: ``data`` has a key that is not a field of ``cls`` (a typo must not silently fall back to
            the default), or ``data`` is not a mapping.
    """
    data = _plain(data)
    if data is None:
        return cls()
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    if not isinstance(data, Mapping):
        raise ValueError(f"config {path or cls.__name__!r} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = ", ".join(f"{path}.{k}" if path else str(k) for k in unknown)
        raise ValueError(f"unknown config key(s) {where} for {cls.__name__}; valid keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()})


def _plain(data: Any) -> Any:
    """OmegaConf containers -> resolved plain dicts/lists; anything else unchanged (omegaconf is optional)."""
    try:
        from omegaconf import Container, OmegaConf
    except ImportError:  # pragma: no cover
        return data
    return OmegaConf.to_container(data, resolve=True) if isinstance(data, Container) else data


def _convert(hint: Any, value: Any, path: str) -> Any:
    """``value`` of a field annotated ``hint``: nested dataclasses built, list/tuple matched to the annotation."""
    value = _plain(value)
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        # Only ``X | None`` is unambiguous; a real union of several types is passed through as given.
        return _convert(args[0], value, path) if len(args) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return dataclass_from_dict(hint, value, path=path)
    if (hint is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    # Copies of lists and dicts: the config must not alias the caller's containers.
    if (hint is list or origin is list) and isinstance(value, list | tuple):
        return list(value)
    if (hint is dict or origin is dict) and isinstance(value, Mapping):
        return dict(value)
    return value

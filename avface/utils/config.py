"""Typed configs from plain mappings, and their registration with Hydra: the one way the project does both.

Every config (``AVFaceConfig``, ``PreprocessConfig``, ``SynthesizeConfig``, ``OcclusionConfig``, ...) is a
dataclass, rebuilt with :func:`dataclass_from_dict` from Hydra/OmegaConf nodes, JSON (``params["config"]``) or
Ray task payloads. String options are ``Literal`` fields, checked there (OmegaConf 2.3 does not know ``Literal``).

The dataclasses are the only source of keys and defaults: :func:`store_config` registers a dataclass (its
defaults) or an instance (a preset) in Hydra's ConfigStore, and ``conf/*.yaml`` only pick them in their
``defaults`` list (see docs/ARCHITECTURE.md, "Configuration").
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, Container, OmegaConf

__all__ = ["dataclass_from_dict", "omegaconf_node", "plain", "store_config"]

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
            the default), ``data`` is not a mapping, or a ``Literal`` field (also inside ``X | None``, a tuple,
            list or dict) holds a value it does not allow; the message names the key path, the value and the
            allowed values.
    """
    data = plain(data)
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


def plain(data: Any) -> Any:
    """OmegaConf containers -> resolved plain dicts/lists; anything else unchanged (the one conversion every config
    loader uses)."""
    return OmegaConf.to_container(data, resolve=True) if isinstance(data, Container) else data


def _is_union(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin is typing.Union or origin is types.UnionType


def _convert(hint: Any, value: Any, path: str) -> Any:
    """``value`` of a field annotated ``hint``: nested dataclasses built, ``Literal`` values checked,
    list/tuple matched to the annotation (elements converted too)."""
    value = plain(value)
    origin = typing.get_origin(hint)
    if _is_union(hint):
        if value is None:
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        # Only ``X | None`` is unambiguous; a real union of several types is passed through as given.
        return _convert(args[0], value, path) if len(args) == 1 else value
    if origin is Literal:
        allowed = typing.get_args(hint)
        # ``True == 1``: compare types as well, so a bool never passes for an int option (or the reverse).
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ValueError(f"config {path}={value!r} is not allowed; allowed values: "
                             f"{', '.join(repr(a) for a in allowed)}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return dataclass_from_dict(hint, value, path=path)
    args = typing.get_args(hint)
    if (hint is tuple or origin is tuple) and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) == len(value):  # tuple[X, Y]
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        return tuple(value)
    # Copies of lists and dicts: the config must not alias the caller's containers.
    if (hint is list or origin is list) and isinstance(value, list | tuple):
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if (hint is dict or origin is dict) and isinstance(value, Mapping):
        if len(args) == 2:
            return {k: _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    return value


# ----------------------------------------------------------------------------------------------- Hydra nodes


def _omegaconf_hint(hint: Any) -> Any:
    """The annotation OmegaConf 2.3 accepts for ``hint``: ``Literal[...]`` becomes the type of its values (``str``
    for string options; ``Any`` when mixed), recursively inside ``X | None`` / tuple / list / dict, and nested
    dataclasses their OmegaConf twin (:func:`_omegaconf_class`)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        kinds = {type(a) for a in args}
        return kinds.pop() if len(kinds) == 1 else Any
    if _is_union(hint):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return typing.Optional[_omegaconf_hint(rest[0])]  # noqa: UP045 - OmegaConf needs typing.Union here
        return Any
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _omegaconf_class(hint)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[_omegaconf_hint(args[0]), ...]
        return tuple[tuple(_omegaconf_hint(a) for a in args)]
    if origin is list and args:
        return list[_omegaconf_hint(args[0])]
    if origin is dict and len(args) == 2:
        return dict[args[0], _omegaconf_hint(args[1])]
    return hint


@functools.cache
def _omegaconf_class(cls: type) -> type:
    """A dataclass with the fields of ``cls``, annotated as OmegaConf accepts (see :func:`_omegaconf_hint`) and
    without defaults (the node is always built from an instance). Cached: one twin per class, so nodes of the
    same config (a schema and a preset of the group it holds) merge."""
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _omegaconf_hint(hints[f.name]), dataclasses.field(default=MISSING))
              for f in dataclasses.fields(cls)]
    twin = dataclasses.make_dataclass(cls.__name__, fields)
    twin.__module__ = __name__
    return twin


def omegaconf_node(config: Any) -> Any:
    """``config`` (a dataclass instance, or a dataclass: its defaults) as an instance of its OmegaConf twin.

    Hydra builds a typed node of it: overrides are type-checked and converted (``video.fps=30`` -> 30.0) as for
    the dataclass itself; ``Literal`` values are checked later, by :func:`dataclass_from_dict`.
    """
    if isinstance(config, type):
        config = config()
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass or dataclass instance, got {type(config).__name__}")
    twin = _omegaconf_class(type(config))
    values = {}
    for f in dataclasses.fields(config):
        values[f.name] = _node_value(getattr(config, f.name))
    return twin(**values)


def _node_value(v: Any) -> Any:
    """Nested dataclasses (also as values of a dict, e.g. ``stages: dict[str, StageConfig]``) as their twins."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return omegaconf_node(v)
    if isinstance(v, dict):
        return {k: _node_value(x) for k, x in v.items()}
    return v


def store_config(name: str, config: Any, group: str | None = None) -> None:
    """Register ``config`` (a dataclass: its defaults; or an instance: a preset) in Hydra's ConfigStore as
    ``name`` (a schema a ``conf/*.yaml`` lists in its ``defaults``) or as option ``name`` of ``group`` (picked
    with ``group=name`` on the command line or in a defaults list, e.g. ``model: tiny``)."""
    ConfigStore.instance().store(name=name, node=omegaconf_node(config), group=group)

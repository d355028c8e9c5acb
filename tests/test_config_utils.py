"""avface.utils.config.dataclass_from_dict: the one builder of nested dataclass configs from mappings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from omegaconf import OmegaConf

from avface.utils.config import dataclass_from_dict


@dataclass
class Inner:
    size: int = 3
    sizes: tuple[int, ...] = (1, 2)
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    name: str = "outer"
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    table: dict[str, int] = field(default_factory=dict)


def test_none_gives_defaults():
    assert dataclass_from_dict(Outer, None) == Outer()


def test_nested_build():
    cfg = dataclass_from_dict(Outer, {"name": "x", "inner": {"size": 7, "sizes": [4], "names": ["b", "c"]}})
    assert cfg == Outer(name="x", inner=Inner(size=7, sizes=(4,), names=["b", "c"]))
    assert isinstance(cfg.inner, Inner)


def test_partial_dicts_take_defaults():
    assert dataclass_from_dict(Outer, {"inner": {"size": 5}}) == Outer(inner=Inner(size=5))
    assert dataclass_from_dict(Outer, {"inner": None}) == Outer()
    assert dataclass_from_dict(Outer, {}) == Outer()


def test_dictconfig_input_is_resolved():
    node = OmegaConf.create({"name": "${inner.names.0}", "inner": {"sizes": [8, 9], "names": ["z"]}})
    cfg = dataclass_from_dict(Outer, node)
    assert cfg == Outer(name="z", inner=Inner(sizes=(8, 9), names=["z"]))
    assert type(cfg.inner.names) is list and type(cfg.inner.sizes) is tuple


def test_tuple_list_conversion_follows_annotation():
    cfg = dataclass_from_dict(Inner, {"sizes": [1, 2, 3], "names": ("p", "q")})
    assert cfg.sizes == (1, 2, 3) and isinstance(cfg.sizes, tuple)
    assert cfg.names == ["p", "q"] and isinstance(cfg.names, list)


def test_containers_are_copied():
    names, table = ["a"], {"k": 1}
    cfg = dataclass_from_dict(Outer, {"inner": {"names": names}, "table": table})
    assert cfg.inner.names == names and cfg.inner.names is not names
    assert cfg.table == table and cfg.table is not table


def test_optional_dataclass():
    assert dataclass_from_dict(Outer, {"extra": None}).extra is None
    assert dataclass_from_dict(Outer, {"extra": {"size": 1}}).extra == Inner(size=1)


def test_dataclass_instance_round_trip():
    cfg = Outer(name="y", inner=Inner(sizes=(5,)), extra=Inner())
    assert dataclass_from_dict(Outer, cfg) == cfg


@pytest.mark.parametrize(("data", "where"), [
    ({"nmae": "x"}, "nmae"),
    ({"inner": {"sise": 1}}, "inner.sise"),
    ({"extra": {"bogus": 1}}, "extra.bogus"),
])
def test_unknown_key_names_dotted_path_and_valid_keys(data, where):
    with pytest.raises(ValueError, match=rf"unknown config key\(s\) {where}\b") as e:
        dataclass_from_dict(Outer, data)
    valid = ["name", "inner", "extra", "table"] if "." not in where else ["size", "sizes", "names"]
    assert all(repr(k) in str(e.value) for k in valid)


def test_path_prefix_in_message():
    with pytest.raises(ValueError, match=r"occlusion\.inner\.sise"):
        dataclass_from_dict(Outer, {"inner": {"sise": 1}}, path="occlusion")


def test_non_mapping_raises():
    with pytest.raises(ValueError, match="inner"):
        dataclass_from_dict(Outer, {"inner": 3})


# ------------------------------------------------------------------------------------------ Literal options
@dataclass
class Options:
    kind: Literal["mel", "phones"] = "mel"
    maybe: Literal["a", "b"] | None = None
    stages: tuple[Literal["coarse", "lip"], ...] = ("coarse",)
    names: list[Literal["x", "y"]] = field(default_factory=list)
    table: dict[str, Literal["on", "off"]] = field(default_factory=dict)
    level: Literal[1, 2] = 1


@dataclass
class Holder:
    options: Options = field(default_factory=Options)
    extra: Options | None = None


def test_literal_values_pass():
    cfg = dataclass_from_dict(Holder, {"options": {"kind": "phones", "maybe": "b", "stages": ["coarse", "lip"],
                                                   "names": ["y"], "table": {"k": "off"}, "level": 2}})
    assert cfg.options == Options(kind="phones", maybe="b", stages=("coarse", "lip"), names=["y"],
                                  table={"k": "off"}, level=2)
    assert dataclass_from_dict(Holder, {"options": {"maybe": None}}).options.maybe is None


@pytest.mark.parametrize(("data", "where", "value", "allowed"), [
    ({"options": {"kind": "mfcc"}}, "options.kind", "'mfcc'", ["'mel'", "'phones'"]),
    ({"options": {"maybe": "c"}}, "options.maybe", "'c'", ["'a'", "'b'"]),
    ({"options": {"stages": ["coarse", "detail"]}}, r"options.stages\[1\]", "'detail'", ["'coarse'", "'lip'"]),
    ({"options": {"names": ["x", "z"]}}, r"options.names\[1\]", "'z'", ["'x'", "'y'"]),
    ({"options": {"table": {"k": "maybe"}}}, "options.table.k", "'maybe'", ["'on'", "'off'"]),
    ({"options": {"level": 3}}, "options.level", "3", ["1", "2"]),
    ({"options": {"level": True}}, "options.level", "True", ["1", "2"]),  # True == 1, but not an int option
    ({"extra": {"kind": "MEL"}}, "extra.kind", "'MEL'", ["'mel'", "'phones'"]),
])
def test_bad_literal_names_path_value_and_allowed_values(data, where, value, allowed):
    with pytest.raises(ValueError, match=rf"{where}={value} is not allowed") as e:
        dataclass_from_dict(Holder, data)
    assert all(a in str(e.value).split("allowed values:")[1] for a in allowed)


def test_literal_checked_from_omegaconf_and_instances():
    with pytest.raises(ValueError, match=r"options\.kind='wav' is not allowed; allowed values: 'mel', 'phones'"):
        dataclass_from_dict(Holder, OmegaConf.create({"options": {"kind": "wav"}}))
    with pytest.raises(ValueError, match=r"options\.kind='wav'"):
        dataclass_from_dict(Holder, Holder(options=Options(kind="wav")))  # type: ignore[arg-type]

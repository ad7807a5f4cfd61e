"""Typed, checked overrides of dataclass configs (model configs and the engine's run config).

Defaults live once, in the dataclass; YAML files and ``--set key=value`` hold only overrides. An unknown key or a
value of the wrong type raises :class:`ConfigError` naming the source, the key, the expected and the actual value.
A field holding a table with fixed entries (one kernel size per modality, say) is overridden entry by entry.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from mmfusion.errors import ConfigError, did_you_mean

C = TypeVar("C")


class RefusedYAML(yaml.YAMLError):
    """YAML that is valid but refused: an alias (``*name``, whose expansion can be exponentially larger than the
    text: a few hundred bytes can stand for gigabytes) or a key given twice in one mapping (one of the two values
    would be silently dropped)."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 does: ``1e-3`` is a float (YAML 1.1, PyYAML's default,
    wants a dot in the mantissa, ``1.0e-3``, and reads ``1e-3`` as a string). Aliases and duplicate keys are
    refused (:class:`RefusedYAML`) while the text is parsed, before any value is built from them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYAML(f"aliases (*{str(event.anchor)[:40]}) are not accepted in mmfusion configs: write "
                              f"the value out where it is used{_where(event.start_mark)}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if repeated:
                    raise RefusedYAML(f"key {_short(key)!r} is given twice in one mapping (only one value would "
                                      f"be used){_where(key_node.start_mark)}")
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """Writes every value out in full (never ``&anchor``/``*alias``, which :class:`_Loader` refuses)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def yaml_dump(data: Any) -> str:
    """``yaml.safe_dump`` in mapping order, without aliases, so that :func:`yaml_load` reads it back."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: Any) -> Any:
    """``yaml.safe_load`` with exponent floats such as ``1e-3`` read as numbers (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, *, source: str | None, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, source=source, key=key)
            except ConfigError:
                continue
        raise ConfigError("wrong type", source=source, key=key, expected=_type_name(tp), actual=value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError("unknown value", source=source, key=key,
                              expected=f"one of {list(typing.get_args(tp))}", actual=value)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError("wrong type", source=source, key=key, expected=_type_name(tp), actual=value)
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, source=source, key=key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError("wrong type", source=source, key=key, expected="mapping", actual=value)
        key_type, value_type = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_type, source=source, key=key): _coerce(v, value_type, source=source, key=f"{key}.{k}")
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("wrong type", source=source, key=key, expected="float", actual=value)
        if not math.isfinite(value):
            raise ConfigError("not a finite number", source=source, key=key, expected="a finite float",
                              actual=value)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("wrong type", source=source, key=key, expected="int", actual=value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError("wrong type", source=source, key=key, expected="bool", actual=value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError("wrong type", source=source, key=key, expected="str", actual=value)
        return value
    return value


def replace_checked(config: C, overrides: Mapping[str, Any] | None, *, source: str | None = None) -> C:
    """Return a copy of the dataclass instance ``config`` with ``overrides`` applied and type-checked."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    checked = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown key for {type(config).__name__}", source=source, key=key,
                              expected=f"one of {names}", actual=key, hint=did_you_mean(key, names))
        checked[key] = _coerce(value, hints[key], source=source, key=key)
        current = getattr(config, key)
        if isinstance(current, dict) and current and isinstance(checked[key], dict):
            checked[key] = _merge_table(current, checked[key], source=source, key=key)
    new = dataclasses.replace(config, **checked)  # type: ignore[type-var]
    post = getattr(new, "validate", None)
    if callable(post):
        post(source=source)
    return new


def _merge_table(current: Mapping[str, Any], override: Mapping[str, Any], *, source: str | None,
                 key: str) -> dict[str, Any]:
    """A field whose value is a table with fixed entries (e.g. one kernel size per modality): ``override`` sets
    some of them and keeps the others; an entry the table does not have is an error, not silently ignored."""
    for name in override:
        if name not in current:
            raise ConfigError("unknown entry", source=source, key=f"{key}.{name}", expected=f"one of {list(current)}",
                              actual=name, hint=did_you_mean(name, current))
    return {**current, **override}


def check_bounds(config: Any, *, source: str | None = None, at_least: Mapping[str, float] | None = None,
                 above: Mapping[str, float] | None = None, below: Mapping[str, float] | None = None) -> None:
    """:class:`ConfigError` for the first field of the dataclass instance ``config`` out of its bounds:
    ``at_least`` (value >= bound), ``above`` (value > bound), ``below`` (value < bound)."""
    for bounds, op, ok in ((at_least, ">=", lambda v, b: v >= b), (above, ">", lambda v, b: v > b),
                           (below, "<", lambda v, b: v < b)):
        for key, bound in (bounds or {}).items():
            value = getattr(config, key)
            if not ok(value, bound):
                raise ConfigError("out of range", source=source, key=key, expected=f"{op} {bound}", actual=value)


def check_model_values(config: Any, *, source: str | None = None) -> None:
    """Generic bounds of a model config: an int field whose default is positive (a width, a count of layers or
    heads, a kernel size), or such an entry of a table field (a width per modality), must stay >= 1, and a float
    field named ``*dropout`` must lie in [0, 1)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(f.default, int) and not isinstance(f.default, bool) and f.default > 0:
            check_bounds(config, source=source, at_least={f.name: 1})
        elif isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            for name, v in value.items():  # a table of sizes (one per modality): each entry >= 1 as well
                d = default.get(name) if isinstance(default, dict) else None
                if isinstance(d, int) and not isinstance(d, bool) and d > 0 and isinstance(v, int) and v < 1:
                    raise ConfigError("out of range", source=source, key=f"{f.name}.{name}", expected=">= 1",
                                      actual=v)
        elif f.name.endswith("dropout") and isinstance(value, float):
            check_bounds(config, source=source, at_least={f.name: 0}, below={f.name: 1})


def build_checked(cls: type[C], overrides: Mapping[str, Any] | None, *, source: str | None = None) -> C:
    """Instantiate dataclass ``cls`` from its defaults plus checked overrides."""
    return replace_checked(cls(), overrides, source=source)


def build_model_config(cls: type[C], overrides: Mapping[str, Any] | None, *, source: str | None = None) -> C:
    """A model's config dataclass ``cls`` from its defaults plus checked overrides, then the range checks of every
    model config (:func:`check_model_values`). Every builder of ``mmfusion.models`` makes its config here, and the
    command line checks ``model_args`` here too, so a bad value is the same error through ``build()`` and ``--set``."""
    config = build_checked(cls, overrides, source=source)
    check_model_values(config, source=source)
    return config


def parse_value(text: str, *, key: str | None = None) -> Any:
    """Parse the value of a ``--set key=value`` flag as YAML (numbers, booleans, lists); text that is not YAML
    stays a string, YAML that is refused (aliases, repeated keys: :class:`RefusedYAML`) is a :class:`ConfigError`."""
    try:
        return yaml_load(text)
    except RefusedYAML as exc:
        raise ConfigError(f"refused value: {exc}", source="--set", key=key) from None
    except yaml.YAMLError:
        return text


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for a missing, unreadable or malformed file (not UTF-8 text, not
    YAML, aliases or repeated keys)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError("config file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file ({exc.strerror or exc})", source=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}); save the file as UTF-8",
                          source=str(path)) from None
    try:
        data = yaml_load(text)
    except RefusedYAML as exc:
        raise ConfigError(f"refused YAML: {exc}", source=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {_short(exc, 400)}", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", source=str(path), expected="mapping",
                          actual=type(data).__name__)
    return data

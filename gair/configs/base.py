"""Typed configuration machinery: dataclasses <- YAML files + dotted overrides.

Every config section is a ``@dataclass``; each field carries its documentation in a
``metadata={"help": ...}`` entry (shown by ``--help`` of the jobs) and every section
may define ``validate()`` to reject bad values at load time. An unknown key, in a
YAML file or in a ``--set a.b=c`` override, is an error naming the closest valid keys:
a typo is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration could not be built: unknown key, wrong type or invalid value."""


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its documentation (``help``) attached."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    # YAML reads ``1e3`` as a string and ``2.0`` as a float: accept both when they are whole.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected a string, got {value!r}")


def _to_union(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(f"{where}: {value!r} does not match {tp}: {'; '.join(errors)}")


def _to_literal(value: Any, tp: Any, where: str) -> Any:
    choices = typing.get_args(tp)
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
    return value


def _to_sequence(value: Any, tp: Any, where: str) -> list | tuple:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(value, str):  # a CLI value: "[1, 2]" (YAML) or "a,b"
        value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        item_types = args
    else:  # list[X] or tuple[X, ...]
        item_types = (args[0] if args else Any,) * len(value)
    items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, item_types))]
    return tuple(items) if origin is tuple else items


def _to_mapping(value: Any, tp: Any, where: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _to_section(value: Any, tp: Any, where: str) -> Any:
    if isinstance(value, tp):
        return value
    parse = getattr(tp, "parse", None)
    if isinstance(value, str) and callable(parse):  # a section with a one-string form (a CLI value)
        try:
            value = parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        validate = getattr(value, "validate", None)
        if callable(validate):
            try:
                validate()
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
    return from_dict(tp, value, prefix=where)


# The converters: one per scalar type, one per generic origin (``list[int]`` -> list).
_SCALARS: dict[Any, Callable[[Any, str], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
_GENERICS: dict[Any, Callable[[Any, Any, str], Any]] = {
    typing.Union: _to_union,
    types.UnionType: _to_union,
    typing.Literal: _to_literal,
    list: _to_sequence,
    tuple: _to_sequence,
    dict: _to_mapping,
}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type ``tp``, or raise ConfigError."""
    if tp is Any:
        return value
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    if dataclasses.is_dataclass(tp):
        return _to_section(value, tp, where)
    origin = typing.get_origin(tp)
    if origin in _GENERICS:
        return _GENERICS[origin](value, tp, where)
    raise TypeError(f"{where}: config fields of type {tp} are not supported")


def _unknown_key(key: str, valid: Iterable[str], where: str) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"unknown config key {where + '.' if where else ''}{key!r}.{hint} Valid keys: {', '.join(valid)}"
    )


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(key, fields, prefix)
        where = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], where)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc
    return obj


def to_dict(obj: Any) -> Any:
    """A plain nested dict (YAML-serialisable) of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (for logging params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], 0.0003). The value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], cls: type, overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict, checking each key against ``cls``."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        section = cls
        for i, part in enumerate(path):
            names = {f.name: f for f in dataclasses.fields(section)}
            if part not in names:
                raise _unknown_key(part, names, ".".join(path[:i]))
            tp = typing.get_type_hints(section)[part]
            last = i == len(path) - 1
            if last:
                node[part] = value
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"{'.'.join(path[: i + 1])} is not a section; cannot set {'.'.join(path)}")
                node = node.setdefault(part, {})
                section = tp
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file, then apply ``--set`` style overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        data = loaded
    data = apply_overrides(data, cls, overrides)
    return from_dict(cls, data)


def save_config(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field: the jobs' ``--help`` epilog."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((key, default, f.metadata.get("help", "")))
    return rows


def format_help(cls: type) -> str:
    lines = ["config keys (set in the YAML file or with --set key=value):"]
    for key, default, help_ in describe(cls):
        lines.append(f"  {key} = {default}\n      {help_}")
    return "\n".join(lines)

"""One config schema per component: plain dataclasses, used by the CLI, YAML files and ROS params alike.

A component defines ``@dataclass class FooConfig`` whose fields carry defaults and a short docstring in
``field(metadata={"help": ...})``. This module turns such classes into / out of nested dicts (YAML) and
flat ``section.key`` dicts (ROS 2 parameters), with unknown keys and wrong types reported by name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pose2rgbd.errors import ConfigError

C = TypeVar("C")


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a description (shown by the CLI and declared as a ROS param description)."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def field_help(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (YAML-safe: tuples become lists, Paths become strings)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)  # type: ignore[no-any-return]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where=where)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
    """Build ``cls`` from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def load_yaml(cls: type[C], path: str | Path, *, section: str | None = None) -> C:
    """Load ``cls`` from a YAML file (``yaml.safe_load``). ``section`` selects a nested key.

    A ROS 2 params file (``node: {ros__parameters: {...}}``) is accepted too: the ``ros__parameters`` level
    is unwrapped (pass the node name as ``section`` when the file holds several nodes).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if section is not None:
        if section not in data:
            raise ConfigError(f"{p}: no section '{section}' (found {sorted(data)})")
        data = data[section]
    elif isinstance(data, dict) and len(data) == 1:
        only = next(iter(data))
        if isinstance(data[only], dict) and set(data[only]) == {"ros__parameters"}:
            data = data[only]  # a ROS 2 params file of one node: `node_name: {ros__parameters: ...}`
    if isinstance(data, dict) and set(data) == {"ros__parameters"}:
        data = unflatten(data["ros__parameters"])
    return from_dict(cls, data, where=str(p))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": v}`` (the ROS 2 parameter naming)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": v}`` -> nested dict; nested input is passed through."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        parts = k.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(v, dict):
            node.setdefault(parts[-1], {}).update(unflatten(v))
        else:
            node[parts[-1]] = v
    return out


def describe(cls: type, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Flat ``{"a.b": (default, help)}`` for every leaf field: what the ROS node declares as parameters."""
    out: dict[str, tuple[Any, str]] = {}
    inst = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(describe(hints[f.name], name + "."))
        else:
            out[name] = (to_dict(inst)[f.name], str(f.metadata.get("help", "")))
    return out


def ranged_field(default: float, help: str, lo: float, hi: float) -> Any:
    """A :func:`help_field` for a number with its allowed closed range ``[lo, hi]`` (metadata key ``range``):
    declared as the ROS parameter's range and checked when a node parameter changes."""
    if not lo <= default <= hi:
        raise ConfigError(f"default {default} outside its range [{lo}, {hi}]")
    return dataclasses.field(default=default, metadata={"help": help, "range": (lo, hi)})


def param_ranges(cls: type, prefix: str = "") -> dict[str, tuple[float, float]]:
    """Flat ``{"a.b": (lo, hi)}`` for every leaf field declared with :func:`ranged_field`."""
    out: dict[str, tuple[float, float]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(param_ranges(hints[f.name], f"{prefix}{f.name}."))
        elif "range" in f.metadata:
            out[f"{prefix}{f.name}"] = tuple(f.metadata["range"])  # type: ignore[assignment]
    return out

"""One config schema per component: plain dataclasses, used by the CLI, YAML files and ROS params alike.

A component defines ``@dataclass class FooConfig`` whose fields carry defaults and a short docstring in
``field(metadata={"help": ...})``. This module turns such classes into / out of nested dicts (YAML) and
flat ``section.key`` dicts (ROS 2 parameters), with unknown keys and wrong types reported by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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


def _check_finite(value: Any, where: str) -> None:
    """NaN and inf are refused in every float config value (a field opts out with metadata ``nonfinite``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value} is not a usable number (NaN or infinite); give a finite value")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
    """Build ``cls`` from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    renamed = getattr(cls, "RENAMED_KEYS", None) or {}  # {old key: what to write instead (text or fn(value))}
    for u in unknown:
        if u in renamed:
            instead = renamed[u](data[u]) if callable(renamed[u]) else renamed[u]
            raise ConfigError(f"{where + '.' if where else ''}{u} is no longer a key: write {instead}")
    if unknown:
        hint = "".join(f"; did you mean {' or '.join(c)} for '{u}'?" for u in unknown if (c := closest(u, names)))
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}{hint}; valid keys are {sorted(names)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k, v in data.items():  # a nested section starts from its field's default (which may differ from its class's)
        factory = fields[k].default_factory
        if isinstance(v, dict) and factory is not dataclasses.MISSING and dataclasses.is_dataclass(hints[k]):
            data[k] = merged(to_dict(factory()), v)
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    for k, v in kwargs.items():
        if not fields[k].metadata.get("nonfinite"):
            _check_finite(v, f"{where + '.' if where else ''}{k}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def read_yaml_dict(path: str | Path, *, section: str | None = None) -> dict[str, Any]:
    """A nested dict from a YAML file: plain nested, or a ROS 2 params file (``node: {ros__parameters: ...}``,
    dotted keys allowed). ``section`` selects a top-level key (the node name when the file holds several)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values, got {type(data).__name__}")
    if section is not None:
        if section not in data:
            raise ConfigError(f"{p}: no section '{section}' (found {sorted(data)})")
        data = data[section]
    elif len(data) == 1:
        only = next(iter(data))
        if isinstance(data[only], dict) and set(data[only]) == {"ros__parameters"}:
            data = data[only]  # a ROS 2 params file of one node: `node_name: {ros__parameters: ...}`
    if isinstance(data, dict) and set(data) == {"ros__parameters"}:
        data = data["ros__parameters"]
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values")
    return unflatten(data)


def load_yaml(cls: type[C], path: str | Path, *, section: str | None = None) -> C:
    """Load ``cls`` from a YAML file (``yaml.safe_load``). ``section`` selects a nested key.

    A ROS 2 params file (``node: {ros__parameters: {...}}``) is accepted too: the ``ros__parameters`` level
    is unwrapped (pass the node name as ``section`` when the file holds several nodes).
    """
    return from_dict(cls, read_yaml_dict(path, section=section), where=str(Path(path)))


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


class Leaf(NamedTuple):
    """One leaf field of a config schema: its dotted key (the ROS 2 parameter name), type, default and help."""

    key: str
    type: Any
    default: Any
    help: str


def leaves(cls: type, prefix: str = "", defaults: Mapping[str, Any] | None = None) -> dict[str, Leaf]:
    """``{"a.b": Leaf}`` for every leaf field of ``cls`` (nested dataclasses are walked), in field order.
    ``defaults``: values that replace the class's own defaults (nested like :func:`to_dict`'s output, e.g. a
    preset's), shown as the defaults."""
    out: dict[str, Leaf] = {}
    base = merged(to_dict(cls()), defaults or {})
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaves(tp, name + ".", base[f.name]))  # type: ignore[arg-type]
        else:
            out[name] = Leaf(name, tp, base[f.name], str(f.metadata.get("help", "")))
    return out


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` applied key by key, nested mappings merged rather than replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def describe(cls: type, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Flat ``{"a.b": (default, help)}`` for every leaf field: what the ROS node declares as parameters."""
    return {k: (leaf.default, leaf.help) for k, leaf in leaves(cls, prefix).items()}


def closest(key: str, valid: typing.Iterable[str], n: int = 3) -> list[str]:
    """The valid keys nearest to a misspelt one (also matching on the last dotted part)."""
    valid = list(valid)
    found = difflib.get_close_matches(key, valid, n=n, cutoff=0.6)
    tail = key.rsplit(".", 1)[-1]
    for v in valid:
        if len(found) < n and v not in found and v.rsplit(".", 1)[-1] == tail:
            found.append(v)
    return found


# the train / validation / test split kinds (pose2rgbd.dataset.splits.make_split: what each holds out), here so that
# every config schema and CLI choice list that names them reads one tuple without importing the dataset package
SPLIT_KINDS = ("random", "route", "blocks", "every-nth")


def ordinal(n: int) -> str:
    """English ordinal of a whole number: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 102nd (for "every 2nd")."""
    n = int(n)
    suffix = "th" if 10 <= abs(n) % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(abs(n) % 10, "th")
    return f"{n}{suffix}"


def type_name(tp: Any) -> str:
    """A short human name of a field type (used in help and errors)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {type_name(args[0])}" if args else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_text(raw: str, tp: Any, key: str) -> Any:
    """A command-line string -> a value of the field type ``tp`` (then :func:`from_dict` validates it).

    Numbers and booleans are read by type (``1e-3``, ``true``/``false``); strings and paths are taken as
    written; lists are ``a,b,c`` or a YAML list ``[a, b]``; ``null`` / ``none`` gives None where allowed.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or origin is dict:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: {raw!r} is not a valid YAML value: {e}") from e
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.strip().lower() in ("", "none", "null", "~"):
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return parse_text(raw, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {raw!r}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == raw:
                return a
        raise ConfigError(f"{key}: {raw!r} is not one of {[str(a) for a in args]}")
    if origin in (list, tuple):
        text = raw.strip()
        if text.startswith("["):
            try:
                items = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError(f"{key}: {raw!r} is not a valid YAML list: {e}") from e
            items = ["" if v is None else str(v) for v in items]
        else:
            items = [v.strip() for v in text.split(",")] if text else []
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} comma-separated items, got {raw!r}")
            return [parse_text(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args))]
        inner_tp = args[0] if args else Any
        return [parse_text(v, inner_tp, f"{key}[{i}]") for i, v in enumerate(items)]
    if tp is bool:
        low = raw.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    return raw


def parse_numbers(text: str, n: int, key: str, form: str) -> list[float]:
    """``"a,b,c"`` -> ``n`` floats; a ConfigError naming ``key`` and the expected ``form`` otherwise."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise ConfigError(f"{key}: expected {form}, got {text!r}")
    return vals


def parse_size(text: str, key: str = "size") -> tuple[int, int] | None:
    """``"WIDTHxHEIGHT"`` (e.g. ``640x480``) -> ``(w, h)``; empty -> None (keep the recorded size)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        one = text.strip().isdigit()
        why = (" (one number: a dataset's frames are stored at a width and a height, keeping the camera's aspect "
               f"ratio, e.g. {int(text)}x{int(text) * 3 // 4} for 4:3; the square side models train at is train's "
               "--size)" if one else "")  # fmt: skip
        raise ConfigError(f"{key}: expected WIDTHxHEIGHT such as 640x480 (empty: keep), got {text!r}{why}") from None
    if w < 8 or h < 8:
        raise ConfigError(f"{key}: {text!r} is too small (at least 8x8)")
    return w, h


def size_warning(wh: tuple[int, int] | None, src_w: int, src_h: int, key: str = "--size") -> str:
    """What is doubtful about writing ``src_w x src_h`` frames at ``wh`` ("" nothing): another aspect ratio (the
    pixels stretched: a width and height given the wrong way round, most often; models and SIFT see a squeezed
    world), or more pixels than the source has (upscaled frames hold no more detail, at many times the disk and
    time)."""
    if wh is None or src_w <= 0 or src_h <= 0:
        return ""
    w, h = wh
    stretch = (w / src_w) / (h / src_h)  # > 1: wider than the source
    if abs(math.log(stretch)) > math.log(1.05):
        swapped = abs(math.log((h / w) / (src_w / src_h))) < 0.05
        fits = f"{h}x{w}" if swapped else f"{w}x{max(round(w * src_h / src_w), 1)}"
        return (
            f"{key} {w}x{h} has another aspect ratio than the {src_w}x{src_h} source ({w / h:.2f} vs "
            f"{src_w / src_h:.2f}): every pixel is stretched {max(stretch, 1 / stretch):.2f}x "
            f"{'sideways' if stretch > 1 else 'upwards'}"
            + (" (width and height the wrong way round?)" if swapped else "")
            + f"; the source's aspect is kept by {key} {fits} (WIDTHxHEIGHT, width first)"
        )
    if w > src_w * 1.05 or h > src_h * 1.05:
        factor = (w * h) / (src_w * src_h)
        return (
            f"{key} {w}x{h} is larger than the {src_w}x{src_h} source: upscaled frames hold no more detail and take "
            f"{factor:.1f}x the pixels (disk, time); give the source's size or a smaller one (empty: as recorded)"
        )
    return ""


# One vocabulary for the two ways a recording becomes a dataset (`pose2rgbd record bag` and `pose2rgbd convert
# bag`: RecorderConfig and ConvertConfig): the same keys, formats and help for the same concepts (the camera mount
# section is one class, pose2rgbd.geometry.mount.CameraMount).
DATUM_HELP = (
    "ENU origin 'lat,lon,alt' (degrees, degrees, metres above the WGS-84 ellipsoid); empty: the first valid GPS fix"
)
SIZE_HELP = "output image size 'WIDTHxHEIGHT', e.g. 640x480 (intrinsics scaled); empty: as recorded"


def parse_datum_text(text: str, key: str = "datum") -> tuple[float, float, float] | None:
    """``"lat,lon,alt"`` -> three floats; empty -> None (the first valid fix)."""
    if not text:
        return None
    lat, lon, alt = parse_numbers(text, 3, key, "'lat,lon,alt' in degrees, degrees, metres (empty: first fix)")
    return lat, lon, alt


def ranged_field(default: float, help: str, lo: float, hi: float) -> Any:
    """A :func:`help_field` for a number with its allowed closed range ``[lo, hi]`` (metadata key ``range``):
    declared as the ROS parameter's range and checked when a node parameter changes, and checked for a command's
    flags, ``--set`` and ``--config`` files (:func:`pose2rgbd.config_cli.config_data`), which name the flag."""
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

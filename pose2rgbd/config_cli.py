"""Command-line flags generated from config schemas, and the one override path every command uses.

A command declares its schema (one config dataclass, or named sections such as ``{"model": ModelConfig,
"train": TrainConfig}``) and a table of friendly aliases; :func:`add_config_flags` then gives it:

* one flag per leaf field, named by its dotted key, which is also the ROS 2 parameter name
  (``--engine.checkpoint``, ``--rate_hz``, ``--train.lr``); help from the field's help text with the default,
  grouped by section; booleans take ``true`` / ``false``, lists ``a,b,c`` or ``[a, b]``;
* ``--set KEY=VALUE`` (repeatable) for any key, ``--config FILE`` (YAML: plain nested, or a ROS 2 params file);
* the aliases (``--checkpoint``, ``--lr``, ``--no-progress``, ...), which feed the same keys.

:func:`config_from_args` builds the config: defaults < ``--config`` files < flags, aliases and ``--set`` in
command-line order, all through :func:`pose2rgbd.config.from_dict` (coercion, validation, ``__post_init__``).
Errors are :class:`~pose2rgbd.errors.ConfigError` naming the key (a misspelt key gets the closest valid ones).

The flags are added when the command is parsed (not when ``pose2rgbd --help`` lists the commands), so a
schema that lives next to heavy code costs nothing until its command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pose2rgbd.config import (
    Leaf,
    closest,
    flatten,
    from_dict,
    leaves,
    merged,
    param_ranges,
    parse_text,
    read_yaml_dict,
    type_name,
)
from pose2rgbd.errors import ConfigError, missing_extra

OPS = "_config_ops"  # namespace attribute: the overrides in command-line order
FILES = "_config_files"
SCHEMA = "_config_schema"
_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class Alias:
    """A friendly flag that sets schema keys through the same override path as the generated flags.

    ``Alias("--lr", "train.lr")`` takes a value (parsed by the field type); ``const=False`` makes it a switch
    (``Alias("--no-progress", "train.progress", const=False)``); ``to`` maps the parsed argparse value(s) to
    ``{key: value}`` (one flag setting several keys, e.g. ``--size W [H]``).
    """

    flags: str | tuple[str, ...]
    key: str | None = None
    const: Any = _UNSET
    to: Callable[[Any], dict[str, Any]] | None = None
    nargs: int | str | None = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    help: str | None = None
    deprecated: str | None = None  # the current spelling, when this one is kept only for old scripts
    group: str | None = None  # the --help section it is listed in (an argument group of that title); None: common

    @property
    def names(self) -> tuple[str, ...]:
        return (self.flags,) if isinstance(self.flags, str) else tuple(self.flags)


class Schema:
    """The config schema of a command: one dataclass (keys ``a.b``) or named sections (keys ``section.a.b``).

    ``defaults``: per section (``""`` for a single dataclass), values that replace the class's own defaults, e.g.
    the preset a command was given: ``--help`` shows them and every other source (``--config``, flags, ``--set``)
    applies on top of them. ``moved``: keys that moved to another section, ``{old: (new, why)}``: a ``--config``
    file that still uses one is refused with both names, as it is read."""

    def __init__(
        self,
        spec: type | Mapping[str, type],
        defaults: Mapping[str, Mapping[str, Any]] | None = None,
        moved: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.sections: dict[str, type] = {"": spec} if isinstance(spec, type) else dict(spec)
        self.defaults: dict[str, Mapping[str, Any]] = dict(defaults or {})
        self.moved: dict[str, tuple[str, str]] = dict(moved or {})
        unknown = sorted(set(self.defaults) - set(self.sections))
        if unknown:
            raise ConfigError(f"defaults for unknown section(s) {unknown}")
        self.leaves: dict[str, Leaf] = {}
        self.ranges: dict[str, tuple[float, float]] = {}  # the keys declared with ranged_field: their [lo, hi]
        for name, cls in self.sections.items():
            self.leaves.update(leaves(cls, f"{name}." if name else "", self.defaults.get(name)))
            self.ranges.update(param_ranges(cls, f"{name}." if name else ""))

    def check_moved(self, data: Mapping[str, Any], where: str) -> None:
        """Refuse a key of ``data`` (nested, as read from ``where``) that moved."""
        for old, (new, why) in self.moved.items():
            section, _, key = old.partition(".")
            if isinstance(data.get(section), Mapping) and key in data[section]:
                raise ConfigError(f"{where}: '{old}' is now '{new}' ({why}); rename it")

    def leaf(self, key: str, origin: str) -> Leaf:
        if key in self.leaves:
            return self.leaves[key]
        near = closest(key, self.leaves)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise ConfigError(f"{origin}: unknown key '{key}'{hint} (every key is listed by --help)")

    def check_ranges(self, data: Mapping[str, object], origins: Mapping[str, str]) -> None:
        """Refuse a number of ``data`` (nested) outside its key's declared range (:func:`pose2rgbd.config.ranged_field`,
        the range a node's ROS parameter declares), naming where it was given (``origins``: key -> flag or file)."""
        flat = flatten(dict(data))
        for key, (lo, hi) in self.ranges.items():
            v = flat.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue  # not a number (the type check names it), or NaN / inf (refused as such)
            if not lo <= v <= hi:
                raise ConfigError(f"{origins.get(key, key)}: {v} is outside its range [{lo}, {hi}]")

    def build(self, data: dict[str, Any], where: str = "") -> Any:
        """Nested dict -> the config (one instance, or ``{section: instance}``)."""
        if "" in self.sections:
            return from_dict(self.sections[""], merged(self.defaults.get("", {}), data), where=where)
        unknown = sorted(set(data) - set(self.sections))
        if unknown:
            raise ConfigError(
                f"{where or 'config'}: unknown section(s) {unknown}; valid sections are {sorted(self.sections)}"
            )
        return {
            name: from_dict(cls, merged(self.defaults.get(name, {}), data.get(name) or {}), where=name)
            for name, cls in self.sections.items()
        }


class _Record(argparse.Action):
    """Appends ``(key, value, origin, raw)`` to the namespace's override list, in command-line order."""

    def __init__(self, option_strings: list[str], dest: str, *, key: str | None = None, value: Any = _UNSET,
                 to: Callable[[Any], dict[str, Any]] | None = None, raw: bool = True, **kw: Any) -> None:  # fmt: skip
        if value is not _UNSET:
            kw["nargs"] = 0
        super().__init__(option_strings, argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)
        self.key, self.value, self.to, self.raw = key, value, to, raw

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        ops = list(getattr(namespace, OPS, None) or [])
        origin = option_string or self.option_strings[0]
        if self.value is not _UNSET:
            ops.append((self.key, self.value, origin, False))
        elif self.to is not None:
            try:
                ops.extend((k, v, origin, False) for k, v in self.to(values).items())
            except ConfigError as e:
                raise argparse.ArgumentError(self, str(e)) from e
        elif self.key is None:  # --set KEY=VALUE
            if "=" not in values:
                raise argparse.ArgumentError(self, f"expected KEY=VALUE, got {values!r}")
            k, v = values.split("=", 1)
            ops.append((k.strip(), v, f"--set {k.strip()}", True))
        else:
            if self.raw and isinstance(values, list):  # nargs: `--splits random route` -> "random,route"
                values = ",".join(values)
            ops.append((self.key, values, origin, self.raw))
        setattr(namespace, OPS, ops)


def _help_text(text: str) -> str:
    return text.replace("%", "%%")


def _metavar(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, typing.get_origin(int | None)):
        inner = [a for a in args if a is not type(None)]
        return _metavar(inner[0]) if len(inner) == 1 else "VALUE"
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin in (list, tuple):
        return "A,B,..."
    return {bool: "true|false", int: "N", float: "X", str: "TEXT", Path: "PATH"}.get(tp, "VALUE")


def _default_text(default: Any) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    if default is None:
        return "null"
    if isinstance(default, list):
        return ",".join(str(v) for v in default) or "empty"
    if default == "":
        return "empty"
    return str(default)


_NEEDED = re.compile(r"\((?:required|needed)\b[^()]*\)\s*$")  # "(required)", "(needed without --map)" at the end


def _with_default(text: str, default: Any) -> str:
    """``text`` and its ``(default: ...)``; a flag whose help ends by saying it is required (or needed) shows none:
    its default only means "not given", which the help already says is not an option."""
    if _NEEDED.search(text):
        return text
    return f"{text} (default: {_default_text(default)})"


def _group(parser: argparse.ArgumentParser, title: str, description: str | None = None) -> Any:
    """The argument group of ``title`` in ``parser`` (one the command made itself too), created when absent."""
    for g in parser._action_groups:  # argparse keeps its groups here; it has no public lookup by title
        if g.title == title:
            return g
    return parser.add_argument_group(title, description)


def _add_generated(
    parser: argparse.ArgumentParser, schema: Schema, taken: set[str], titles: Mapping[str, str] | None = None
) -> None:
    groups: dict[str, Any] = {}
    ordered = sorted(schema.leaves.items(), key=lambda kv: "." in kv[0])  # top-level keys first (stable)
    for key, leaf in ordered:
        flag = f"--{key}"
        if flag in taken:
            continue  # an alias of the same key already owns this spelling
        section = key.rsplit(".", 1)[0] if "." in key else ""
        if section not in groups:
            title = f"{section}.* settings" if section else "top-level settings"
            top = section.split(".", 1)[0]
            if titles and top in titles:
                title = f"{titles[top]}: {title}"
            desc = "generated from the config schema: the keys of --config FILE and --set (a node's ROS 2 parameters)"
            groups[section] = parser.add_argument_group(title, desc if not groups else None)
        text = _with_default(leaf.help, leaf.default)
        kw: dict[str, Any] = {"nargs": "?", "const": "true"} if leaf.type is bool else {}  # `--x` alone: true
        if typing.get_origin(leaf.type) is typing.Literal:
            kw["choices"] = [str(a) for a in typing.get_args(leaf.type)]
        groups[section].add_argument(
            flag, action=_Record, key=key, metavar=_metavar(leaf.type), help=_help_text(text), **kw
        )


def _add_aliases(parser: argparse.ArgumentParser, schema: Schema, aliases: Sequence[Alias]) -> set[str]:
    taken: set[str] = set()
    common = None
    for a in aliases:
        leaf = schema.leaf(a.key, a.names[0]) if a.key else None
        text = a.help if a.help is not None else (leaf.help if leaf else "")
        if a.key and a.const is _UNSET and a.to is None and leaf is not None:
            text = _with_default(text, leaf.default)
        if a.key and not any(n == f"--{a.key}" for n in a.names):
            text += f" [= --set {a.key}={_default_text(a.const)}]" if a.const is not _UNSET else f" [= --{a.key}]"
        if a.deprecated:
            text = f"deprecated spelling of {a.deprecated}"
        kw: dict[str, Any] = {"key": a.key, "value": a.const, "to": a.to, "help": _help_text(text)}
        if a.const is _UNSET:
            kw["metavar"] = a.metavar or (_metavar(leaf.type) if leaf and not a.choices else None)
            if a.nargs is not None:
                kw["nargs"] = a.nargs
            if a.type is not None:
                kw["type"], kw["raw"] = a.type, False
            if a.choices is not None:
                kw["choices"] = a.choices
        if a.group is not None:
            group = _group(parser, a.group)
        else:
            if common is None:
                common = parser.add_argument_group("common options", "short spellings of the settings below")
            group = common
        group.add_argument(*a.names, action=_Record, **kw)
        taken.update(a.names)
    return taken


def add_config_flags(
    parser: argparse.ArgumentParser,
    schema: Callable[..., Schema],
    aliases: Sequence[Alias] | Callable[[], Sequence[Alias]] = (),
    *,
    config_help: str = "YAML config (plain nested, or a ROS 2 params file); flags and --set override it",
    prepare: Callable[[list[str]], argparse.Namespace] | None = None,
    section_titles: Mapping[str, str] | None = None,
) -> None:
    """Give ``parser`` the generated flags of ``schema``, the ``aliases``, ``--set`` and ``--config``.

    ``section_titles``: a heading for the generated flags of a top-level section (``{"engine": "checkpoint
    localizer"}`` lists ``--engine.*`` under "checkpoint localizer: engine.* settings"); an alias with a ``group``
    is listed under that heading (the argument group of that title, the command's own or a new one).

    ``schema`` (and a callable ``aliases``) are called only when this command is parsed. With ``prepare``,
    the schema depends on earlier flags (``train --method``): ``prepare(argv)`` pre-parses them and
    ``schema(namespace)`` receives the result.
    """
    parser.add_argument("--config", dest=FILES, action="append", type=Path, metavar="FILE", help=config_help)
    parser.add_argument("--set", action=_Record, metavar="KEY=VALUE", help="set any key below (repeatable; later wins)")
    original = parser.parse_known_args
    state: dict[str, Any] = {}

    def populate(argv: list[str]) -> None:
        if "schema" in state:
            return
        try:
            sch = schema(prepare(list(argv))) if prepare is not None else schema()
        except ModuleNotFoundError as e:  # the schema lives next to an optional extra that is not installed
            why = missing_extra(e)
            if why is None or not _asks_for_help(argv):
                raise
            # --help still answers: the command's own flags, and why its settings are not listed
            state["schema"] = None
            note = f"The settings of this command (--KEY VALUE, --set, --config keys) are not listed here: {why}."
            parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note
            return
        state["schema"] = sch
        al = aliases() if callable(aliases) else aliases
        if parser.usage is None:  # the usage line names the command's own flags, not every generated one
            usage = parser.format_usage().removeprefix("usage: ").strip().replace("%", "%%")
            common = any(a.group is None for a in al)
            parser.usage = usage + (" [common options]" if common else "") + " [--KEY VALUE ...]"
        taken = _add_aliases(parser, sch, al)
        _add_generated(parser, sch, taken, section_titles)
        parser.set_defaults(**{SCHEMA: sch})

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        import sys

        populate(list(sys.argv[1:] if args is None else args))
        ns, extra = original(args, namespace)
        _suggest_for_unknown_flags(parser, extra)
        return ns, extra

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign, assignment]
    parser.set_defaults(**{OPS: None})
    parser.populate_config_flags = populate  # type: ignore[attr-defined]  # (for tools that list the flags)


def _asks_for_help(argv: Sequence[str]) -> bool:
    """Whether ``-h`` / ``--help`` is among the flags (before a ``--`` that ends them)."""
    for tok in argv:
        if tok == "--":
            return False
        if tok in ("-h", "--help"):
            return True
    return False


def _suggest_for_unknown_flags(parser: argparse.ArgumentParser, extra: Sequence[str]) -> None:
    """An unknown ``--flag`` close to a known one (``--train.lrr``) is an error naming the nearest flags, as an
    unknown ``--set`` key is; others are left to argparse's own "unrecognized arguments"."""
    known = [o.removeprefix("--") for o in parser._option_string_actions if o.startswith("--")]
    for tok in extra:
        if not tok.startswith("--") or tok == "--":
            continue
        near = closest(tok.removeprefix("--").split("=", 1)[0], known)
        if near:
            parser.error(
                f"unrecognized argument {tok.split('=', 1)[0]}; did you mean {' or '.join('--' + n for n in near)}? "
                "(every flag is listed by --help)"
            )


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = value


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def config_data(args: argparse.Namespace, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The nested dict the config is built from: ``--config`` files, then the overrides in order, then ``extra``."""
    schema: Schema = getattr(args, SCHEMA)
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}  # key -> what gave its value last (a file, a flag), for the range check
    for path in getattr(args, FILES, None) or []:
        d = read_yaml_dict(path)
        schema.check_moved(d, str(path))
        _merge(data, d)
        origins.update({key: f"{path} ({key})" for key in flatten(d)})
    for key, value, origin, raw in getattr(args, OPS, None) or []:
        leaf = schema.leaf(key, origin)
        if raw:
            try:
                value = parse_text(value, leaf.type, f"{origin} ({key}, {type_name(leaf.type)})" if "--set" in origin
                                   else f"{origin} ({key})")  # fmt: skip
            except ConfigError as e:  # what the value is for: e.g. model.size, the side of a square image
                raise ConfigError(f"{e} ({key}: {leaf.help})" if leaf.help else str(e)) from None
        _set_path(data, key, value)
        origins[key] = origin if "--set" in origin else f"{origin} ({key})"
    for key, value in (extra or {}).items():
        schema.leaf(key, "command")
        _set_path(data, key, value)
        origins[key] = key
    schema.check_ranges(data, origins)
    return data


def config_from_args(args: argparse.Namespace, extra: Mapping[str, Any] | None = None) -> Any:
    """The command's config: defaults < ``--config`` files < flags / aliases / ``--set`` (in order) < ``extra``."""
    schema: Schema = getattr(args, SCHEMA)
    return schema.build(config_data(args, extra))

"""--help of every command: a flag that is required shows no default (its default only means "not given")."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from pose2rgbd.cli.main import build_parser
from pose2rgbd.config_cli import _with_default

_SAYS_REQUIRED = re.compile(r"\((?:required|needed)\b[^()]*\)")


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), p
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, (*path, name))


def test_no_required_flag_of_any_command_prints_a_default() -> None:
    seen = []
    for command, p in _commands(build_parser()):
        populate = getattr(p, "populate_config_flags", None)
        if populate is not None:
            populate([])  # the generated flags and aliases, as parsing the command adds them
        for a in p._actions:
            text = " ".join((a.help or "").split())
            says = bool(_SAYS_REQUIRED.search(text))
            if a.required or says:
                seen.append((command, a.option_strings))
                assert "(default:" not in text, (command, a.option_strings, text)
    # the case the rule is for: render's --checkpoint (an alias of engine.checkpoint) says "(required)"
    assert ("render trajectory", ["--checkpoint"]) in seen and ("render bag", ["--checkpoint"]) in seen


def test_the_default_is_left_out_only_where_the_help_ends_saying_required() -> None:
    assert _with_default("model checkpoint (required)", "") == "model checkpoint (required)"
    assert _with_default("checkpoint (needed without --map)", "") == "checkpoint (needed without --map)"
    assert _with_default("the rate", 2.5) == "the rate (default: 2.5)"
    # "required" inside the text (not the flag's own closing remark) keeps the default
    assert _with_default("'file' (covariance_file required), or 'auto'", "auto").endswith("(default: auto)")
    assert _with_default("a list", []) == "a list (default: empty)"

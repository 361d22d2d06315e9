"""The command lines the README and docs/ show name commands and flags the CLI has.

Every ``pose2rgbd <command> [<subcommand>] ...`` in a code block or a code span is parsed by the command's own
parser (which generates its settings' flags when it parses: ``--train.max_steps``, ``--engine.checkpoint``,
``train --method``'s kind's flags), and each ``--flag`` it names must be one of that parser's options. A renamed flag
or subcommand whose docs were not changed fails here, naming the file and the line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from pose2rgbd.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a documented command line ends at a comment or a shell separator
_END = re.compile(r"\s#|;|\|| && ")
_COMMAND = re.compile(r"(?:^|[\s/])pose2rgbd((?:\s+[a-z][a-z0-9-]*).*)")


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _placeholder(token: str) -> bool:
    """A word that stands for one the reader fills in (``<kind>``, ``NAME``, ``...``), not a misspelt subcommand."""
    return token.startswith(("<", "...", "[")) or token.isupper() or not token[0].isalpha()


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command line)`` for every ``pose2rgbd`` command line in the docs (code blocks, with their ``\\``
    continuations joined, and code spans), the command line from the word after ``pose2rgbd``."""
    out: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        snippets: list[tuple[int, str]] = []
        for block in re.finditer(r"```[^\n]*\n(.*?)```", text, re.S):
            line = text.count("\n", 0, block.start(1)) + 1
            logical, start = "", line
            for k, raw in enumerate(block.group(1).split("\n")):
                logical, start = (logical + " " + raw, start) if logical else (raw, line + k)
                if logical.endswith("\\"):  # a continued line
                    logical = logical[:-1]
                    continue
                snippets.append((start, logical))
                logical = ""
        for span in re.finditer(r"`([^`\n]*(?:\n[^`\n]*)?)`", re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count(
                "\n"), text, flags=re.S)):  # fmt: skip
            snippets.append((text.count("\n", 0, span.start()) + 1, span.group(1).replace("\n", " ")))
        for line, snippet in snippets:
            for m in _COMMAND.finditer(snippet):
                out.append((f"{path.relative_to(ROOT)}:{line}", _END.split(m.group(1))[0].strip()))
    return out


def unknown_words(command_line: str) -> list[str]:
    """The flags (and subcommands) of ``command_line`` (the words after ``pose2rgbd``) the CLI does not have."""
    words = command_line.split()
    if any(w.endswith(":") for w in words[:3]):
        return []  # a message the program printed ("pose2rgbd map info: error: ..."), not a command line
    top = build_parser(words[0])
    if words[0] not in _choices(top):
        return []  # "pose2rgbd" as a word in prose ("the pose2rgbd package")
    parser, i = top, 0
    while i < len(words) and words[i] in _choices(parser):
        parser, i = _choices(parser)[words[i]], i + 1
    if _choices(parser) and i < len(words) and not words[i].startswith("-"):
        # a subcommand the reader picks (``localize ... --map``) has flags of its own: none to check
        return [] if _placeholder(words[i]) else [f"subcommand {words[i]!r} (known: {', '.join(_choices(parser))})"]
    quiet = contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO())
    # parsed for the flags it generates; a placeholder value may fail to parse, which does not matter here
    with quiet[0], quiet[1], contextlib.suppress(SystemExit, Exception):
        parser.parse_known_args(words[i:])
    known = _options(parser) | _options(top)
    return [w.split("=")[0] for w in words[i:] if w.startswith("--") and w != "--" and w.split("=")[0] not in known]


def test_the_docs_show_command_lines() -> None:
    found = documented_commands()
    assert len(found) > 100  # the scan finds them (README, cli, ros, training, results ...)
    assert any(where.startswith("README.md") for where, _ in found)


def test_every_documented_flag_exists() -> None:
    wrong = [f"{where}: pose2rgbd {cmd[:100]}: {', '.join(bad)}" for where, cmd in documented_commands()
             if (bad := unknown_words(cmd))]  # fmt: skip
    assert not wrong, "flags or subcommands the CLI does not have:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("render bag --bag B --out O --checkpoint C", []),
        ("render bag --bag B --out O --checkpoint-path C", ["--checkpoint-path"]),
        ("train --method hybrid --dataset D --out O --model.fill_channels 8", []),
        ("train --method hybrid --dataset D --out O --model.no_such_key 8", ["--model.no_such_key"]),
        ("map built --dataset D", ["subcommand 'built'"]),
        ("node NAME --bag B", []),
    ],
)
def test_the_check_fails_on_a_wrong_flag(line: str, expected: list[str]) -> None:
    bad = unknown_words(line)
    assert [b.split(" (")[0] for b in bad] == expected

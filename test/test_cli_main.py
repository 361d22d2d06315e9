"""The command line's start-up: a command line that names a command imports that command's module alone, and parses
as the parser of every command does."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import pytest

from pose2rgbd.cli.main import COMMAND_MODULES, COMMANDS, build_parser, command_of


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_each_command_module_registers_the_command_its_name_ends_with(module: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    assert sorted(sub.choices) == [module.rsplit(".", 1)[1]]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["map", "fuse", "--map", "m"], "map"),
        (["-v", "--progress", "train", "--dataset", "d"], "train"),
        (["--help"], None),
        (["--version"], None),
        ([], None),
        (["mapp", "fuse"], None),  # a misspelling: the full parser says what the commands are
        (["--unknown", "map"], None),
    ],
)
def test_the_command_a_command_line_names(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command
    assert command is None or command in COMMANDS


@pytest.mark.parametrize(
    "argv",
    [
        ["map", "fuse", "--map", "m", "--set", "voxel_size=0.1"],
        ["-v", "sim", "--out", "o", "--size", "64", "48"],
        ["localize", "images", "imgs", "--map", "m", "--out", "o", "--camera", "500,500,320,240"],
    ],
)
def test_one_commands_parser_parses_as_the_full_one(argv: list[str]) -> None:
    one = build_parser(command_of(argv))
    assert set(one._subparsers._group_actions[0].choices) == {command_of(argv)}  # type: ignore[union-attr]
    a, b = vars(one.parse_args(argv)), vars(build_parser().parse_args(argv))
    assert a.keys() == b.keys()
    for k in a:  # a command's config schema is an object of its own in each parser: compared by its contents
        assert (vars(a[k]) == vars(b[k])) if hasattr(a[k], "__dict__") else (a[k] == b[k]), k


def _imported_by(statement: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after ``statement`` (with ``build_parser`` imported)."""
    code = (
        f"import sys\nfrom pose2rgbd.cli.main import build_parser\n{statement}\n"
        f"print(','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return [m for m in out.stdout.strip().split(",") if m]


def test_a_command_imports_its_module_alone() -> None:
    statement = "build_parser('map').parse_args(['map', 'fuse', '--map', 'm'])"
    assert _imported_by(statement, ("pose2rgbd.convert", "pose2rgbd.cli.convert", "rosbags", "torch")) == []


def test_the_full_parser_imports_no_conversion_machinery() -> None:
    """`pose2rgbd --help` builds every command's parser: `convert`'s reads the conversion's config schema, which
    must not pull in the pipeline, the dataset writer or scipy.signal (they made `--help` take 1.1 s)."""
    heavy = ("pose2rgbd.convert.pipeline", "pose2rgbd.dataset", "scipy.signal", "torch")
    assert _imported_by("build_parser()", heavy) == []


def test_the_onnx_exporters_chatter_is_held_back_unless_verbose(tmp_path) -> None:
    """The exporter's optimizer passes log every rewrite at INFO and its registry warns of each torchvision operator
    it skips: held to WARNING / ERROR for a command, shown with --verbose."""
    import logging

    from pose2rgbd.cli.main import QUIET_LIBRARY_LOGGERS, main

    for verbose in ([], ["--verbose"], []):
        assert main([*verbose, "dataset", "info", str(tmp_path / "missing")]) == 2
        for name, level in QUIET_LIBRARY_LOGGERS.items():
            assert logging.getLogger(name).level == (logging.NOTSET if verbose else level)  # NOTSET: the root's


def test_a_native_crash_prints_the_python_stacks() -> None:
    """A segmentation fault in native code after the command line has run (as at interpreter exit after Ctrl-C)
    prints the Python stacks on stderr, not only the signal: faulthandler, enabled by ``main``."""
    script = (
        "import ctypes\n"
        "from pose2rgbd.cli.main import main\n"
        "main([])\n"  # the help: main returns
        "ctypes.string_at(0)\n"  # a read of address 0: SIGSEGV
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == -11, r.stderr
    assert "Segmentation fault" in r.stderr and "in string_at" in r.stderr


def test_the_crash_stacks_leave_a_closed_stderr_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with stderr closed (``2>&-``: ``sys.stderr`` is None), a command runs as before: faulthandler has no
    file to write to and is left off (``faulthandler.enable`` raises RuntimeError there)."""
    import faulthandler

    import pose2rgbd.cli.main as cli

    calls: list[object] = []
    monkeypatch.setattr(faulthandler, "is_enabled", lambda: False)  # (pytest enables it for its own run)
    monkeypatch.setattr(faulthandler, "enable", lambda file=None: calls.append(file))
    monkeypatch.setattr(sys, "stderr", None)
    cli._stacks_on_native_crash()
    assert calls == []

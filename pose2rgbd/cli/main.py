"""``pose2rgbd`` entry point.

Each command module in :mod:`pose2rgbd.cli` exposes ``register(subparsers)`` and keeps heavy imports
(torch, numba) inside its handler so that ``pose2rgbd --help`` stays fast. Library code raises typed
errors (:mod:`pose2rgbd.errors`); this is the only place that turns them into messages and exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pose2rgbd import __version__
from pose2rgbd.atomic import OS_ERRORS, os_error_message, signal_deferral, take_kept
from pose2rgbd.errors import Pose2RGBDError, missing_extra

# Order here is the order in `pose2rgbd --help`. Each module registers the command its name ends with (checked by
# test/test_cli_main.py): a command line that names one imports that module alone (:func:`command_of`).
COMMAND_MODULES = (
    "pose2rgbd.cli.demo",
    "pose2rgbd.cli.sim",
    "pose2rgbd.cli.dataset",
    "pose2rgbd.cli.bag",
    "pose2rgbd.cli.convert",
    "pose2rgbd.cli.train",
    "pose2rgbd.cli.depth",
    "pose2rgbd.cli.evaluate",
    "pose2rgbd.cli.experiments",
    "pose2rgbd.cli.render",
    "pose2rgbd.cli.map",
    "pose2rgbd.cli.localize",
    "pose2rgbd.cli.export",
    "pose2rgbd.cli.record",
    "pose2rgbd.cli.node",
    "pose2rgbd.cli.interpolate",
)


COMMANDS = tuple(name.rsplit(".", 1)[1] for name in COMMAND_MODULES)
# the top-level flags that take no value (one that does, or any other, leaves the command unknown: the full parser)
_GLOBAL_FLAGS = ("-v", "--verbose", "--progress")


def command_of(argv: list[str]) -> str | None:
    """The command a command line names (its first argument after the top-level flags), or None where it names
    none (``--help``, ``--version``, a misspelling: those need every command's parser)."""
    for arg in argv:
        if arg in _GLOBAL_FLAGS:
            continue
        return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser: of every command, or with ``command`` of that one alone -- its module is the only
    one imported (``pose2rgbd map --help`` runs in 0.1 s and 21 MB peak, every command's parser in 0.4 s and 89 MB:
    the geometry, OpenCV and rosbags that other commands' parsers import)."""
    parser = argparse.ArgumentParser(
        prog="pose2rgbd",
        description="Neural RGB-D rendering from 6-DoF poses: simulate, convert bags, train, render, record.",
    )
    parser.add_argument("--version", action="version", version=f"pose2rgbd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--progress", action="store_true", dest="force_progress",
                        help="draw progress bars even when stderr is not a terminal (by default bars appear on a "
                        "terminal only; --no-progress of a command turns them off)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        if command is not None and name.rsplit(".", 1)[1] != command:
            continue
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not written yet
                continue
            raise
        mod.register(sub)
    return parser


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of ``parser`` (``("convert", "bag")``, ...), read from its argparse tree: what
    the help of every command is checked over (test_packaging_wheel.py, scripts/test_wheel.sh)."""
    paths: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(command_paths(sub, (*prefix, name)))
    return paths


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the same cleanup runs as for Ctrl-C."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _output_of(args: argparse.Namespace) -> str | None:
    """The output a command writes (its --out, --out-bag, ...), for an OS error that names no file."""
    for key in ("out", "out_bag", "output.dataset", "output_dataset"):
        val = getattr(args, key, None)
        if val:
            return str(val)
    return None


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``| head``): stop quietly, and keep Python from failing at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# third-party loggers whose lines say nothing a user of the command acts on (shown with --verbose), and the level
# they are held to: the ONNX exporter's optimizer passes log each rewrite at INFO (a screenful per export), and its
# registry warns of every torchvision operator it skips (pose2rgbd's models use none)
QUIET_LIBRARY_LOGGERS = {
    "onnxscript": logging.WARNING,
    "onnx_ir": logging.WARNING,
    "torch.onnx._internal.exporter._registration": logging.ERROR,
}


def _kept_after_error() -> str:
    """What a command that stopped at an error kept (a recording's frames and bag up to the error), as the end of its
    error message; empty where it kept nothing."""
    kept = take_kept()
    return f"; kept {'; '.join(kept)}" if kept else ""


def _stacks_on_native_crash() -> None:
    """A crash in native code (a segmentation fault in a compiled library, also while the interpreter shuts down
    after Ctrl-C) prints every thread's Python stack on stderr (:mod:`faulthandler`), where the process had ended
    with nothing but its signal: the stacks are what a bug report needs. Left as it is where a host (pytest, an
    application calling :func:`main`) enabled it already, and where stderr is not a file."""
    if faulthandler.is_enabled() or sys.stderr is None:  # (None: started with stderr closed, `2>&-`)
        return
    with contextlib.suppress(AttributeError, OSError, RuntimeError, ValueError):  # stderr without a file descriptor
        faulthandler.enable(file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    _stacks_on_native_crash()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the commands are imported or the flags parsed: nothing was started
        print("pose2rgbd: interrupted; nothing was started", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser(command_of(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except Pose2RGBDError as e:  # a schema chosen by an earlier flag (train --method) can refuse it
        print(f"pose2rgbd: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # a command's schema (train: the model registry) imports an extra
        if (why := missing_extra(e)) is None:
            raise
        print(f"pose2rgbd: error: {why}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for name, level in QUIET_LIBRARY_LOGGERS.items():  # set for this command, as the progress flag below
        logging.getLogger(name).setLevel(logging.NOTSET if args.verbose else level)
    from pose2rgbd.progress import force_progress

    # the top-level flag (commands keep their own --no-progress), set for this command: an earlier call of main in
    # the same process (a test, a script) does not leave it on
    force_progress(args.force_progress)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        # SIGTERM raises like Ctrl-C; both are held while any thread puts outputs in place (pose2rgbd.atomic)
        with _sigterm_as_interrupt(), signal_deferral():
            rc = args.func(args)
            sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except Pose2RGBDError as e:
        msg = str(e)
        cause = e.__cause__
        if (isinstance(cause, OSError) and cause.errno in OS_ERRORS and not e.says_what_to_do
                and OS_ERRORS[cause.errno][1] not in msg):  # fmt: skip
            msg += f"; {OS_ERRORS[cause.errno][1]}"  # a library wrapped a disk-full / permission error
        print(f"pose2rgbd {args.command}: error: {msg}{_kept_after_error()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        kept = take_kept()  # what the command finished and kept (e.g. the frames `record` wrote)
        done = f"kept {'; '.join(kept)}" if kept else "nothing half-written was kept"
        print(f"pose2rgbd {args.command}: {how}; {done}", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 141
    except ModuleNotFoundError as e:
        if (why := missing_extra(e)) is None:
            raise
        print(f"pose2rgbd {args.command}: error: {why}", file=sys.stderr)
        return 2
    except OSError as e:
        os_msg = os_error_message(e, _output_of(args))
        if os_msg is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"pose2rgbd {args.command}: error: {os_msg}{_kept_after_error()}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

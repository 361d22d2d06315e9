"""``pose2rgbd`` entry point.

Each command module in :mod:`pose2rgbd.cli` exposes ``register(subparsers)`` and keeps heavy imports
(torch, numba) inside its handler so that ``pose2rgbd --help`` stays fast. Library code raises typed
errors (:mod:`pose2rgbd.errors`); this is the only place that turns them into messages and exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pose2rgbd import __version__
from pose2rgbd.errors import Pose2RGBDError
from pose2rgbd.output_guard import take_kept

# Order here is the order in `pose2rgbd --help`.
COMMAND_MODULES = (
    "pose2rgbd.cli.demo",
    "pose2rgbd.cli.sim",
    "pose2rgbd.cli.dataset",
    "pose2rgbd.cli.bag",
    "pose2rgbd.cli.convert",
    "pose2rgbd.cli.train",
    "pose2rgbd.cli.evaluate",
    "pose2rgbd.cli.experiments",
    "pose2rgbd.cli.render",
    "pose2rgbd.cli.record",
    "pose2rgbd.cli.node",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose2rgbd",
        description="Neural RGB-D rendering from 6-DoF poses: simulate, convert bags, train, render, record.",
    )
    parser.add_argument("--version", action="version", version=f"pose2rgbd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not written yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except Pose2RGBDError as e:  # a schema chosen by an earlier flag (train --method) can refuse it
        print(f"pose2rgbd: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = args.func(args)
    except Pose2RGBDError as e:
        print(f"pose2rgbd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = take_kept()  # what the command finished and kept (e.g. the frames `record` wrote)
        done = f"kept {'; '.join(kept)}" if kept else "nothing half-written was kept"
        print(f"pose2rgbd {args.command}: interrupted; {done}", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

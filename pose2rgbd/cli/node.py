"""``pose2rgbd node NAME``: run any node of the node table (:data:`pose2rgbd.nodes.NODES`) offline over a bag.

The same node as ``ros2 run pose2rgbd NAME_node``: its flags are generated from the node's config schema (the
node's ROS 2 parameters: ``--rate_hz 5``, ``--set topics.image=/cam``, ``--config config/NAME.yaml``), what it
publishes is written to ``--out`` (a bag). A new node needs no CLI code of its own. ``render bag`` and
``record bag`` are this runner with friendlier flags and summaries.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pose2rgbd.config_cli import Schema, add_config_flags, config_from_args

_VALUED = {"--bag", "--out", "--rate", "--namespace", "--storage", "--config", "--set"}


def _node_name(argv: list[str]) -> str | None:
    """NAME: the first word of the ``node`` command's arguments that is not a flag or a flag's value (None
    when absent, e.g. ``node --help``)."""
    if "node" in argv:
        argv = argv[argv.index("node") + 1 :]
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in _VALUED
        else:
            return a
    return None


def _pre_parse(argv: list[str]) -> argparse.Namespace:
    return argparse.Namespace(name=_node_name(argv))


def _schema(pre: argparse.Namespace) -> Schema:
    if pre.name is None:
        return Schema({})  # `pose2rgbd node --help`: no node chosen, no node flags
    from pose2rgbd.nodes import node_spec

    return Schema(node_spec(pre.name).config)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "node",
        help="run any node (render, record, localize) offline over a bag; flags from its parameters",
        description="Replays a bag through a node of the node table (the same node as `ros2 run pose2rgbd "
        "NAME_node`) and writes what it publishes to --out. `pose2rgbd node NAME --help` lists the node's "
        "parameters as flags.",
        allow_abbrev=False,
    )
    p.add_argument("name", metavar="NAME", help="the node: its short name (render, record, localize) or ROS node name")
    p.add_argument("--bag", type=Path, required=True, help="input bag (rosbag2 dir, .mcap, .db3 or ROS 1 .bag)")
    p.add_argument("--out", type=Path, default=None, help="bag to write the node's published topics to")
    p.add_argument("--rate", type=float, default=0.0, help="replay speed: 0 as fast as possible, 1.0 bag speed")
    p.add_argument("--namespace", default="", help="prefix of relative topic names")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    add_config_flags(
        p, _schema, prepare=_pre_parse, config_help="the node's YAML (e.g. config/NAME.yaml); flags override it"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd.nodes import node_spec
    from pose2rgbd.nodes.spec import check_ranges
    from pose2rgbd.runtime.offline import run_node_bag

    spec = node_spec(args.name)
    cfg = config_from_args(args)
    check_ranges(cfg)  # the parameter ranges, as the ROS host declares them
    stats = run_node_bag(
        spec,
        cfg,
        args.bag,
        args.out,
        rate=args.rate,
        namespace=args.namespace,
        storage=args.storage,
        overwrite=args.overwrite,
        progress=True,
    )
    print(f"{spec.name}: {args.bag} replayed in {stats.wall_s:.1f} s")
    for k, v in stats.counters.items():
        print(f"  {k:<40} {v}")
    for topic, n in sorted(stats.messages_out.items()):
        print(f"  published {topic:<30} {n}")
    return 0

"""A ROS 2 params file given to a node that holds no section for it: said, not silently ignored.

rcl applies a ``--params-file`` section only to the nodes its key names: ``/**`` (any node), a fully qualified
name (``/pose2rgbd/pose2rgbd_renderer``), or a bare name, which names the node in the root namespace only. A node
started under a namespace (``-r __ns:=/pose2rgbd``, as the launch files start them) therefore ignores a section keyed
``pose2rgbd_renderer:``, and rcl says nothing: every edited value stays at its default. This module reads the files
named on the node's command line and names each one that has no section the node takes, with the keys that would
fit. The matching follows rcl's rules for the keys (``*`` one name token, ``**`` any number of them); written here
because rclpy does not expose which sections applied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml


def params_files(argv: Sequence[str]) -> list[Path]:
    """The files of ``--params-file FILE`` among the ROS arguments of ``argv`` (after ``--ros-args``)."""
    out, ros = [], False
    for k, a in enumerate(argv):
        if a == "--ros-args":
            ros = True
        elif a == "--":
            ros = False
        elif ros and a == "--params-file" and k + 1 < len(argv):
            out.append(Path(argv[k + 1]))
    return out


def key_matches(key: str, fqn: str) -> bool:
    """Whether the params-file section ``key`` applies to the node ``fqn`` (its fully qualified name)."""
    k = key if key.startswith("/") else "/" + key
    pattern = ""
    for tok in k.strip("/").split("/"):
        if tok == "**":
            pattern += r"(/[^/]+)*"
        else:
            pattern += "/" + "[^/]*".join(re.escape(p) for p in tok.split("*"))
    return re.fullmatch(pattern or "/", fqn) is not None


def unmatched_params_files(argv: Sequence[str], fqn: str) -> list[str]:
    """A warning for each params file of ``argv`` none of whose sections applies to the node ``fqn``."""
    out = []
    for path in params_files(argv):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue  # rcl itself refuses a file it cannot read
        if not isinstance(data, dict) or any(key_matches(str(k), fqn) for k in data):
            continue
        keys = ", ".join(repr(str(k)) for k in data)
        out.append(
            f"params file {path}: no section applies to this node {fqn} (its sections: {keys}), so none of its values "
            f"was set. A bare node name applies in the root namespace only: key the section '/**' (any node) or "
            f"'{fqn}'"
        )
    return out

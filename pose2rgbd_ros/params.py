"""Declare a node's parameters from its config dataclass (names, defaults, descriptions) and read them back."""

from __future__ import annotations

from typing import Any, TypeVar

from pose2rgbd.config import describe, from_dict, unflatten

C = TypeVar("C")


def declare_config(node: Any, cls: type[C]) -> C:
    """Declare every leaf of ``cls`` as a ROS parameter (``a.b`` names, description = field help) and return
    the config built from the parameter values (params file / launch overrides applied). Raises ConfigError."""
    from rcl_interfaces.msg import ParameterDescriptor

    values: dict[str, Any] = {}
    for name, (default, help_text) in describe(cls).items():
        node.declare_parameter(name, default, ParameterDescriptor(description=help_text))
        values[name] = node.get_parameter(name).value
    return from_dict(cls, unflatten(values), where=node.get_name())

"""A :class:`pose2rgbd.messages.MessageFactory` that builds rclpy messages.

The node logic hands over numpy arrays; rclpy's generated setters want ``array.array`` for sequences of
numbers (they iterate anything else element by element, which is slow for images), numpy for fixed-size
arrays, and ``bytes`` of length 1 for the ``byte`` type.
"""

from __future__ import annotations

import array
import importlib
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.messages.interfaces import interface_dir, interface_fields

_TYPECODES = {
    "uint8": "B",
    "octet": "B",
    "int8": "b",
    "uint16": "H",
    "int16": "h",
    "uint32": "I",
    "int32": "i",
    "uint64": "Q",
    "int64": "q",
    "float": "f",
    "double": "d",
}


class RclpyFactory:
    byte_as_bytes = True

    def __init__(self) -> None:
        self._classes: dict[str, Any] = {}

    def cls(self, msgtype: str) -> Any:
        c = self._classes.get(msgtype)
        if c is None:
            parts = msgtype.split("/")
            pkg, kind, name = (parts[0], "msg", parts[1]) if len(parts) == 2 else parts
            c = getattr(importlib.import_module(f"{pkg}.{kind}"), name)
            check_built_interface(msgtype, c)
            self._classes[msgtype] = c
        return c

    def new(self, msgtype: str, **fields: Any) -> Any:
        c = self.cls(msgtype)
        msg = c()
        types = c.get_fields_and_field_types()
        for k, v in fields.items():
            t = types[k]
            if isinstance(v, dict):
                v = self.new(t, **v)
            elif isinstance(v, np.ndarray) and t.startswith("sequence<"):
                inner = t[len("sequence<") : -1].split(",")[0]
                code = _TYPECODES.get(inner)
                if code is not None:
                    a = array.array(code)
                    a.frombytes(np.ascontiguousarray(v, dtype=np.dtype(code)).tobytes())
                    v = a
                else:
                    v = v.tolist()
            setattr(msg, k, v)
        return msg


def check_built_interface(msgtype: str, cls: Any) -> None:
    """Refuse one of pose2rgbd's own interfaces whose generated class (what ``colcon build`` or
    ``scripts/setup.sh`` built from ``msg/`` and ``srv/``) lacks a field this code's definition has: interfaces
    built before an update of the package. Without the check the node starts and fails at its first message with
    a bare KeyError on the field's name."""
    defined = interface_fields(msgtype)
    if defined is None:
        return
    missing = []
    for part, names in defined.items():
        built = (getattr(cls, part) if part else cls).get_fields_and_field_types()
        missing += [f"{part + '.' if part else ''}{n}" for n in names if n not in built]
    if missing:
        where = getattr(importlib.import_module(cls.__module__), "__file__", None) or cls.__module__
        raise ConfigError(
            f"the built ROS interface {msgtype} ({where}) lacks the field(s) {', '.join(missing)} that this "
            f"package's definition has ({interface_dir()}): the interfaces were built from an older version of "
            "the package. Build them again: bash scripts/setup.sh in a venv set up by it, or colcon build "
            "--packages-select pose2rgbd and source install/setup.bash in a ROS 2 workspace"
        )

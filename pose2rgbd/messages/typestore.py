"""Message type stores (rosbags) used to build, serialize and decode ROS messages without ROS installed."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from rosbags.typesys import Stores, TypesysError, get_types_from_msg
from rosbags.typesys import get_typestore as _rb_get_typestore

from pose2rgbd.errors import BagError

# Distro name -> rosbags store. Humble and Jazzy share the field names of every type we use.
_DISTROS: dict[str, Stores] = {
    "humble": Stores.ROS2_HUMBLE,
    "iron": Stores.ROS2_IRON,
    "jazzy": Stores.ROS2_JAZZY,
    "kilted": Stores.ROS2_KILTED,
    "rolling": Stores.LATEST,
    "latest": Stores.LATEST,
    "noetic": Stores.ROS1_NOETIC,
}

_register_lock = threading.Lock()


def _store_for(distro: str) -> Stores:
    key = distro.lower().removeprefix("ros2_").removeprefix("ros1_")
    if key not in _DISTROS:
        raise BagError(f"unknown ROS distro {distro!r}; known: {', '.join(sorted(_DISTROS))}")
    return _DISTROS[key]


@cache
def get_typestore(distro: str = "humble") -> Any:
    """The (cached, shared) rosbags ``Typestore`` for a ROS distro, e.g. ``"humble"`` or ``"jazzy"``.

    Custom types registered with :func:`register_msg_definitions` are visible to every user of the cached
    store. Use :func:`new_typestore` for a private, mutable copy.
    """
    return _rb_get_typestore(_store_for(distro))


def new_typestore(distro: str | None = "humble") -> Any:
    """A fresh, private typestore (``distro=None``: only builtin_interfaces Time/Duration)."""
    return _rb_get_typestore(Stores.EMPTY if distro is None else _store_for(distro))


def normalize_msgtype(msgtype: str) -> str:
    """``'sensor_msgs/Image'`` or ``'sensor_msgs/msg/Image'`` -> ``'sensor_msgs/msg/Image'``."""
    parts = msgtype.strip().split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return msgtype.strip()


def register_msg_definitions(typestore: Any, defs: dict[str, str]) -> None:
    """Register ``.msg`` definitions (``{'pkg/msg/Name': 'std_msgs/Header header\\n...'}``) in ``typestore``.

    Re-registering an identical definition is a no-op; a different definition for an existing type raises
    :class:`BagError`.
    """
    typs: dict[str, Any] = {}
    for msgtype, text in defs.items():
        name = normalize_msgtype(msgtype)
        try:
            typs.update(get_types_from_msg(text, name))
        except Exception as e:  # rosbags raises several parser exception types
            raise BagError(f"cannot parse message definition of {name!r}: {e}") from e
    with _register_lock:
        try:
            typestore.register(typs)
        except TypesysError as e:
            raise BagError(f"cannot register message definitions {sorted(defs)}: {e}") from e

"""The one way pose2rgbd turns its values into JSON: NumPy scalars and arrays as plain numbers and lists, paths as
text, and non-finite floats (NaN, +-inf) as ``null`` so that the file is strict JSON every parser reads."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def json_ready(obj: Any, *, nan_as_null: bool = True) -> Any:
    """``obj`` with NumPy values as Python ones, tuples as lists, paths as text and (unless ``nan_as_null`` is
    False: files that store NaN as JSON's non-standard ``NaN`` and read it back so) non-finite floats as None.
    Other values are returned as they are (``json.dumps`` refuses what it cannot write)."""
    if isinstance(obj, Mapping):
        return {k if isinstance(k, str) else str(k): json_ready(v, nan_as_null=nan_as_null) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v, nan_as_null=nan_as_null) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist(), nan_as_null=nan_as_null)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if nan_as_null and not math.isfinite(v) else v
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def json_text(obj: Any, *, indent: int | None = 2, nan_as_null: bool = True, **kw: Any) -> str:
    """``json.dumps`` of :func:`json_ready` (``obj``); strict JSON unless ``nan_as_null`` is False. ``kw`` go to
    ``json.dumps`` (``sort_keys``, ``default=str`` for values with no JSON form worth keeping)."""
    return json.dumps(json_ready(obj, nan_as_null=nan_as_null), indent=indent, allow_nan=not nan_as_null, **kw)

"""Config schema helpers: one dataclass per component serves YAML, CLI and ROS params."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pose2rgbd.config import describe, flatten, from_dict, help_field, load_yaml, to_dict, unflatten
from pose2rgbd.errors import ConfigError


@dataclass
class Inner:
    rate_hz: float = help_field(10.0, "publish rate")
    frames: list[str] = help_field(["a", "b"], "frame names")


@dataclass
class Outer:
    name: str = help_field("x", "a name")
    size: int = help_field(128, "output size")
    inner: Inner = field(default_factory=Inner, metadata={"help": "nested"})


def test_round_trip_and_flat_names():
    cfg = from_dict(Outer, {"size": 64, "inner": {"rate_hz": 5}})
    assert cfg.size == 64 and cfg.inner.rate_hz == 5.0 and isinstance(cfg.inner.rate_hz, float)
    d = to_dict(cfg)
    assert from_dict(Outer, d) == cfg
    flat = flatten(d)
    assert flat["inner.rate_hz"] == 5.0
    assert unflatten(flat) == d
    desc = describe(Outer)
    assert desc["inner.rate_hz"] == (10.0, "publish rate")
    assert desc["size"] == (128, "output size")


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\]"):
        from_dict(Outer, {"sise": 1})
    with pytest.raises(ConfigError, match="size: expected an integer"):
        from_dict(Outer, {"size": "big"})
    with pytest.raises(ConfigError, match=r"inner\.rate_hz"):
        from_dict(Outer, {"inner": {"rate_hz": "fast"}})


def test_load_yaml_plain_and_ros_params(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("size: 256\ninner:\n  frames: [x]\n")
    assert load_yaml(Outer, p).inner.frames == ["x"]
    r = tmp_path / "ros.yaml"
    r.write_text("my_node:\n  ros__parameters:\n    size: 32\n    inner.rate_hz: 2.0\n")
    cfg = load_yaml(Outer, r, section="my_node")
    assert cfg.size == 32 and cfg.inner.rate_hz == 2.0
    assert load_yaml(Outer, r) == cfg  # one node: found without naming it
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(Outer, bad)

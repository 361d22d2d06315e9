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


def test_leaves_walk_the_schema_with_types():
    from pose2rgbd.config import leaves

    lv = leaves(Outer)
    assert list(lv) == ["name", "size", "inner.rate_hz", "inner.frames"]
    assert lv["inner.rate_hz"].type is float and lv["inner.frames"].default == ["a", "b"]


def test_parse_text_by_field_type():
    from typing import Literal

    from pose2rgbd.config import parse_text

    assert parse_text("1e-3", float, "k") == 1e-3
    assert parse_text("007", str, "k") == "007"  # strings as written, never YAML-typed
    assert parse_text("false", bool, "k") is False and parse_text("YES", bool, "k") is True
    assert parse_text("1,2,3", list[int], "k") == [1, 2, 3]
    assert parse_text("[1.5, -2]", list[float], "k") == [1.5, -2.0]
    assert parse_text("", list[str], "k") == []
    assert parse_text("null", float | None, "k") is None and parse_text("0.7", float | None, "k") == 0.7
    assert parse_text("30", Literal[24, 30], "k") == 30
    with pytest.raises(ConfigError, match=r"k: expected an integer, got '2\.5'"):
        parse_text("2.5", int, "k")
    with pytest.raises(ConfigError, match=r"k\[1\]: expected a number, got 'x'"):
        parse_text("1,x", list[float], "k")
    with pytest.raises(ConfigError, match="k: expected true or false"):
        parse_text("maybe", bool, "k")
    with pytest.raises(ConfigError, match=r"not one of \['24', '30'\]"):
        parse_text("25", Literal[24, 30], "k")


def test_unknown_keys_get_the_closest_valid_ones(tmp_path):
    from pose2rgbd.config import closest, read_yaml_dict

    assert closest("train.lrr", ["train.lr", "train.seed", "model.size"])[0] == "train.lr"
    assert "train.device" in closest("engine.device", ["train.device", "model.size"])  # same last part
    with pytest.raises(ConfigError, match=r"did you mean size for 'sise'"):
        from_dict(Outer, {"sise": 1})
    r = tmp_path / "ros.yaml"
    r.write_text("node:\n  ros__parameters:\n    inner.rate_hz: 2.0\n    name: n\n")
    assert read_yaml_dict(r) == {"inner": {"rate_hz": 2.0}, "name": "n"}
    r.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml_dict(r)


def test_shared_datum_and_size_formats():
    from pose2rgbd.config import parse_datum_text, parse_size

    assert parse_datum_text("") is None and parse_datum_text("44.4,26.1,80") == (44.4, 26.1, 80.0)
    assert parse_size("") is None and parse_size("640X480") == (640, 480)
    with pytest.raises(ConfigError, match="datum: expected 'lat,lon,alt'"):
        parse_datum_text("44.4,26.1")
    with pytest.raises(ConfigError, match=r"size: expected WIDTHxHEIGHT.*one number.*640x480 for 4:3"):
        parse_size("640")

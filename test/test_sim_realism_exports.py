"""The simulator's realism config and posed-images export as files: checked knobs, the config record of a clean
run, the intrinsics and images of transforms.json through `convert images` (test_sim_realism.py: the effects)."""

from __future__ import annotations

import pytest

from pose2rgbd.config import from_dict
from pose2rgbd.errors import ConfigError
from pose2rgbd.sim import SimConfig
from pose2rgbd.sim.realism import RealismConfig


def test_realism_knobs_are_checked_by_name() -> None:
    for key, bad in (("repeat_prob", 5.0), ("jpeg_quality", 500), ("max_range_m", -3.0), ("grazing_deg", 10.0)):
        with pytest.raises(ConfigError, match=rf"realism\.{key} must be within \["):
            RealismConfig(**{key: bad})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"realism\.{key}"):
            from_dict(SimConfig, {"realism": {key: bad}})
    with pytest.raises(ConfigError, match=r"realism\.jpeg_quality must be an integer"):
        RealismConfig(jpeg_quality=80.5)  # type: ignore[arg-type]
    cfg = SimConfig(realism={"enabled": True, "jpeg_quality": 50})  # type: ignore[arg-type]
    assert isinstance(cfg.realism, RealismConfig) and cfg.realism.jpeg_quality == 50
    with pytest.raises(ConfigError, match=r"realism: unknown key"):
        SimConfig(realism={"jpeg": 50})  # type: ignore[arg-type]

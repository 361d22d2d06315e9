"""The simulator's realism config and posed-images export as files: checked knobs, the config record of a clean
run, the intrinsics and images of transforms.json through `convert images` (test_sim_realism.py: the effects)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pose2rgbd.config import from_dict
from pose2rgbd.dataset import Dataset
from pose2rgbd.errors import ConfigError
from pose2rgbd.sim import SimConfig
from pose2rgbd.sim.realism import RealismConfig

W, H = 40, 30


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


def test_clean_run_records_the_config_as_before(tmp_path: Path) -> None:
    """Realism off: sim_config.yaml and the manifest hold no realism / posed_routes keys (the files, and so the
    dataset fingerprint, are those of a run before they existed) and read back as the same config."""
    from pose2rgbd.sim import simulate

    cfg = SimConfig(width=W, height=H, frames=2, routes=["survey"])
    simulate(cfg, tmp_path / "a", bag=False, progress=False)
    text = (tmp_path / "a" / "sim_config.yaml").read_text()
    rec = Dataset(tmp_path / "a" / "dataset").manifest.extra["sim_config"]
    for key in ("realism", "posed_routes"):
        assert f"\n{key}:" not in text and key not in rec
    assert from_dict(SimConfig, yaml.safe_load(text)) == cfg and from_dict(SimConfig, rec) == cfg
    on = SimConfig(width=W, height=H, frames=2, routes=["survey"], posed_routes=["orbit"],
                   realism=RealismConfig(enabled=True, jpeg_quality=40))  # fmt: skip
    simulate(on, tmp_path / "b", bag=False, progress=False)
    back = from_dict(SimConfig, yaml.safe_load((tmp_path / "b" / "sim_config.yaml").read_text()))
    assert back == on and back.realism.jpeg_quality == 40 and back.posed_routes == ["orbit"]

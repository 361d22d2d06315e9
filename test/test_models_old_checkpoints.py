"""Checkpoints written by earlier code (test/fixtures/old_checkpoints, see its README) load, serve and give the
outputs that code gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.inference import load_engine
from pose2rgbd.inference.common import EngineConfig
from pose2rgbd.inference.render import RenderEngine
from pose2rgbd.models import load_checkpoint

FIX = Path(__file__).parent / "fixtures" / "old_checkpoints"


@pytest.mark.parametrize("preset", ["base", "slice10"])
def test_v1_checkpoint_of_the_old_code_renders_what_the_old_code_rendered(preset: str) -> None:
    want = np.load(FIX / "v1_outputs.npz")
    ck = load_checkpoint(FIX / f"v1_{preset}.pt", expect_fingerprint="fixture0000000000", expect_size=64)
    assert ck.kind == "pose2rgbd" and ck.model_config.preset == preset and ck.step == 7
    assert ck.depth_kind == "metric"
    # the depth range settings the old code kept in the train config are the model's now
    assert ck.model_config.depth_max == 40.0 and ck.model_config.depth_max_percentile == 97.0
    eng = load_engine(EngineConfig(checkpoint=str(FIX / f"v1_{preset}.pt"), device="cpu", precision="fp32"))
    assert isinstance(eng, RenderEngine)
    r = eng.render(want["T_world_cam"])
    np.testing.assert_array_equal(r.out_of_bounds, want[f"{preset}_out_of_bounds"])
    assert r.rgb is not None and r.depth is not None
    # uint8 RGB: at most one step of rounding; depth within float32 rounding of the old engine
    assert np.abs(r.rgb.astype(int) - want[f"{preset}_rgb"].astype(int)).max() <= 1
    np.testing.assert_allclose(r.depth, want[f"{preset}_depth"], rtol=1e-5, atol=1e-4)
    if preset == "slice10":
        assert r.confidence is not None
        np.testing.assert_allclose(r.confidence, want["slice10_confidence"], rtol=1e-5, atol=1e-5)
    else:
        assert r.confidence is None


def test_v2_checkpoint_with_depth_settings_in_the_train_config_loads_them_into_the_model_config() -> None:
    ck = load_checkpoint(FIX / "v2_slice10.pt")
    assert ck.model_config.depth_max == 40.0 and ck.model_config.depth_max_percentile == 97.0
    assert ck.model.depth_range_m == pytest.approx((0.5, 40.0))


def test_v3_hybrid_with_an_embedded_store_renders_what_the_old_code_rendered() -> None:
    """A hybrid checkpoint whose keyframes travel inside it (written before place maps) still loads and renders
    exactly as the code that wrote it."""
    want = np.load(FIX / "v3_hybrid_outputs.npz")
    eng = load_engine(EngineConfig(checkpoint=str(FIX / "v3_hybrid.pt"), device="cpu", precision="fp32"))
    assert isinstance(eng, RenderEngine) and eng.loaded.kind == "hybrid"
    r = eng.render(want["T_world_cam"])
    assert np.abs(r.rgb.astype(int) - want["rgb"].astype(int)).max() <= 1
    np.testing.assert_allclose(r.depth, want["depth"], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(r.confidence, want["confidence"])

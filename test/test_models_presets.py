"""Pose2RGBD networks: shapes per preset/output, parameter counts, slice targets, depth normalization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS, build_model, preset_config
from pose2rgbd.methods.pose2rgbd import Pose2RGBDConfig as ModelConfig
from pose2rgbd.methods.pose2rgbd.config import PAPER_PRESETS
from pose2rgbd.methods.pose2rgbd.slices import slice_targets
from pose2rgbd.models import DepthNormalizer, count_parameters


@pytest.mark.parametrize("preset", list(PAPER_PRESETS))
@pytest.mark.parametrize("outputs", ["rgb", "depth", "rgbd"])
@pytest.mark.parametrize("encoding", ["6dof-euler", "6dof-quat"])
def test_output_shapes(preset: str, outputs: str, encoding: str) -> None:
    if preset != "base" and outputs == "rgb":
        with pytest.raises(ConfigError, match="slice"):
            preset_config(preset, outputs=outputs, size=64)
        return
    cfg = preset_config(preset, outputs=outputs, encoding=encoding, size=64)
    model = build_model(cfg).eval()
    d = 6 if encoding == "6dof-euler" else 7
    with torch.no_grad():
        out = model(torch.rand(2, d) * 2 - 1)
    assert ("rgb" in out) == (outputs != "depth")
    assert ("depth" in out) == (outputs != "rgb")
    if "rgb" in out:
        assert out["rgb"].shape == (2, 3, 64, 64)
        assert out["rgb"].abs().max() <= 1.0
    if "depth" in out:
        assert out["depth"].shape == (2, 1, 64, 64)
        assert out["depth"].abs().max() <= 1.0
    if preset == "base":
        assert "slices" not in out and "confidence" not in out
    else:
        k = cfg.slices
        assert out["slices"].shape == (2, k, 64, 64)
        assert torch.all((out["slices"] >= 0) & (out["slices"] <= 1))
        assert torch.allclose(out["confidence"], out["slices"].sum(1, keepdim=True))


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_every_power_of_two_size(size: int) -> None:
    model = build_model(preset_config("base", size=size, outputs="depth")).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 7))["depth"].shape == (1, 1, size, size)


@pytest.mark.parametrize("size", [32, 96, 1024])
def test_bad_sizes_rejected(size: int) -> None:
    with pytest.raises(ConfigError, match="power of two"):
        ModelConfig(size=size)


def _expected_parameters(cfg: ModelConfig) -> int:
    """Independent count from the architecture description (docs/models.md)."""
    k2 = cfg.kernel_size**2
    c0 = cfg.dense_channels
    n = cfg.input_dim * 16 * c0 + 16 * c0 + 2 * c0  # dense (+bias) + BN on the 4x4 map
    cin = c0
    for w in cfg.trunk_channels[: ModelConfig.n_upsamplings(cfg.size) - 1]:
        n += k2 * cin * w + 2 * w  # transposed conv (no bias) + BN
        cin = w
    out = cfg.out_channels
    if cfg.preset == "base":
        return n + k2 * cin * out + out
    b, s = cfg.bottleneck_channels, cfg.slices
    n += k2 * cin * b + 2 * b  # last upsampling to the bottleneck width
    n += 2 * (9 * b * b + 2 * b)  # b1, b2
    n += 9 * b * s + s  # slice head (bias, sigmoid)
    n += 9 * (b + s) * b + 2 * b  # b3 reads [penultimate features, slices]
    return n + 9 * b * out + out


@pytest.mark.parametrize("preset", list(PAPER_PRESETS))
def test_parameter_counts_at_512_near_paper(preset: str) -> None:
    cfg = preset_config(preset, size=512, outputs="depth", encoding="6dof-quat")
    n = count_parameters(build_model(cfg))
    assert n == _expected_parameters(cfg)
    assert abs(n / PAPER_PARAMETERS[preset] - 1) < 0.005  # within 0.5 % of the paper's Table 4


def test_slice_parameter_deltas_track_paper() -> None:
    counts = {p: count_parameters(build_model(preset_config(p, size=512, outputs="depth"))) for p in PAPER_PRESETS}
    # paper: 544 parameters per extra slice; ours: 9 * 32 (head) + 1 (bias) + 9 * 32 (b3 input) = 577
    per_slice = (counts["slice64"] - counts["slice10"]) / 54
    assert per_slice == 577
    paper_per_slice = (PAPER_PARAMETERS["slice64"] - PAPER_PARAMETERS["slice10"]) / 54  # 544
    assert abs(per_slice / paper_per_slice - 1) < 0.07  # ours tracks the paper's growth per slice within 6.1 %
    assert counts["base"] < counts["slice10"] < counts["slice32"] < counts["slice64"]


def test_slice_targets_hand_made_numpy_and_torch() -> None:
    d = np.array([[-1.0, -0.81, -0.79, 0.0], [0.79, 0.81, 1.0, np.nan]], dtype=np.float32)
    # S = 10: intervals [-1,-0.8) [-0.8,-0.6) ... [0.8, 1]  (exact 0.2 multiples are not representable in
    # float32, so boundary cases are tested with S = 4 below)
    want_idx = np.array([[0, 0, 1, 5], [8, 9, 9, -1]])
    t_np = slice_targets(d, 10)
    assert t_np.shape == (10, 2, 4)
    t_t = slice_targets(torch.from_numpy(d)[None, None], 10)[0].numpy()
    for t in (t_np, t_t):
        for (r, c), k in np.ndenumerate(want_idx):
            col = t[:, r, c]
            if k < 0:
                assert col.sum() == 0  # NaN: no slice
            else:
                assert col.sum() == 1 and col[k] == 1


def test_slice_targets_four_slices_match_paper_figure() -> None:
    d = np.linspace(-1, 1, 9, dtype=np.float32).reshape(1, 9)
    t = slice_targets(d, 4)
    assert t.argmax(0).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 3]]


def test_depth_normalizer_roundtrip_inf_nan() -> None:
    dn = DepthNormalizer(10.0, 110.0)
    x = np.array([10.0, 60.0, 110.0, 500.0, np.inf, np.nan, 0.0], dtype=np.float32)
    y = dn.normalize(x)
    assert y[:5].tolist() == pytest.approx([-1.0, 0.0, 1.0, 1.0, 1.0])
    assert math.isnan(y[5]) and y[6] == pytest.approx(-1.0)
    assert dn.denormalize(np.array([-1.0, 0.0, 1.0, 3.0])).tolist() == pytest.approx([10.0, 60.0, 110.0, 110.0])
    tt = dn.normalize(torch.tensor([60.0, float("inf"), float("nan")]))
    assert tt[0].item() == pytest.approx(0.0) and tt[1].item() == pytest.approx(1.0) and torch.isnan(tt[2])
    assert DepthNormalizer.from_dict(dn.to_dict()) == dn
    with pytest.raises(ConfigError):
        DepthNormalizer(5.0, 5.0)


def test_depth_normalizer_fit_ignores_inf_nan() -> None:
    d = np.full((3, 4, 4), np.inf, np.float32)
    d[0, 0, 0], d[1, 1, 1], d[2, 2, 2] = 5.0, 50.0, np.nan
    dn = DepthNormalizer.fit(d)
    assert (dn.min_m, dn.max_m) == (5.0, 50.0)
    assert DepthNormalizer.fit(d, indices=[1, 0], max_m=30.0).max_m == 30.0
    ramp = np.arange(1, 101, dtype=np.float32).reshape(1, 10, 10)
    far = np.full((1, 10, 10), np.nan, np.float32)
    far[0, 0, 0] = 1e6  # one grazing ray
    dn50 = DepthNormalizer.fit(np.concatenate([ramp, far]), max_percentile=50.0)
    assert dn50.min_m == 1.0 and dn50.max_m == pytest.approx(51.0)  # the outlier does not set the range
    assert DepthNormalizer.fit(np.concatenate([ramp, far])).max_m == 1e6  # plain min-max (the paper)


def test_outputs_to_arrays_units() -> None:
    """The model turns its outputs into data units with its own transforms (depth range buffer)."""
    dn = DepthNormalizer(0.0, 100.0)
    model = build_model(preset_config("base", size=64, outputs="rgbd"), dn)
    out = {
        "rgb": torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2),
        "depth": torch.full((1, 1, 2, 2), 0.5),
        "confidence": torch.ones(1, 1, 2, 2),
    }
    a = model.outputs_to_arrays(out)
    assert a["rgb"].dtype == np.uint8 and a["rgb"].shape == (1, 2, 2, 3)
    assert a["rgb"][0, 0, 0].tolist() == [0, 128, 255]
    assert a["depth"].shape == (1, 2, 2) and a["depth"][0, 0, 0] == pytest.approx(75.0)
    assert a["confidence"].shape == (1, 2, 2)
    assert model.outputs_to_arrays({"rgb": out["rgb"]})["depth"] is None
    model.set_depth_normalizer(DepthNormalizer(10.0, 20.0))  # one source of truth: the buffer
    assert model.outputs_to_arrays(out)["depth"][0, 0, 0] == pytest.approx(17.5)
    assert model.depth_range_m == (10.0, 20.0)


def test_rgb_to_uint8_is_the_same_in_numpy_and_in_torch() -> None:
    """outputs_to_arrays converts RGB with numpy on the CPU and with torch on a GPU: the same bytes (halves to even,
    out of range clipped)."""
    from pose2rgbd.models.interfaces import rgb_to_uint8_numpy, rgb_to_uint8_on_device

    x = np.random.default_rng(0).uniform(-1.2, 1.2, (2, 3, 64, 64)).astype(np.float32)
    x[0, 0, 0, :3] = [-1.0, 0.0, 1.0]  # 0, 127.5 (to 128, even), 255
    a = rgb_to_uint8_numpy(x)
    assert a.dtype == np.uint8 and a.shape == (2, 64, 64, 3) and a[0, 0, :3, 0].tolist() == [0, 128, 255]
    assert (a == 0).mean() > 0.05 and (a == 255).mean() > 0.05  # clipped at both ends
    assert np.array_equal(rgb_to_uint8_on_device(torch.from_numpy(x)), a)

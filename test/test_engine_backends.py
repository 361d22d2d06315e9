"""One engine, two backends: an exported .onnx served through ONNX Runtime gives the torch engine's images,
depth, confidence and poses (within a stated tolerance); backend / file / precision mismatches are clear errors;
look-ahead renders off the request path (a miss costs one inline render; predicted poses come from the cache);
bf16 on a CPU without native bf16 is warned about or refused at engine start."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from export_helpers import LOC_FAMILY, localize_checkpoint, pose2rgbd_checkpoint

from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.inference import EngineConfig, LocalizeEngine, RenderEngine, load_engine
from pose2rgbd.models import load_checkpoint
from pose2rgbd.models.export import export_onnx
from pose2rgbd.models.registry import register_family, unregister_family
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint

DEPTH_TOL_M = 1e-3  # depth range 1-200 m: 1e-4 of the [-1, 1] output is < 0.01 m; fp32 rewrites give ~1e-4 m
CONF_TOL = 1e-4


def _cfg(checkpoint: Path, **kw: object) -> EngineConfig:
    return EngineConfig(checkpoint=str(checkpoint), **{"warmup": 1, "device": "cpu", **kw})  # type: ignore[arg-type]


def _poses() -> np.ndarray:
    return np.stack(
        [look_down_pose(x, y, z, yaw) for x, y, z, yaw in [(0, 0, 20, 0), (50, -30, 40, 1.0), (-90, 80, 8, 2)]]
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("onnx")
    out = {}
    for preset in ("base", "slice10"):
        ck = pose2rgbd_checkpoint(tmp, preset)
        out[preset] = (ck, export_onnx(load_checkpoint(ck), tmp / f"{preset}.onnx", exporter="torchscript").path)
    return out


@pytest.mark.parametrize("preset", ["base", "slice10"])
def test_render_engine_from_onnx_equals_torch(exported: dict, preset: str) -> None:
    ck, onnx_path = exported[preset]
    torch_eng = load_engine(_cfg(ck, precision="fp32"))
    ort_eng = load_engine(_cfg(onnx_path))  # backend auto: onnxruntime for .onnx
    assert isinstance(ort_eng, RenderEngine) and ort_eng.backend.name == "onnxruntime"
    assert torch_eng.backend.name == "torch"
    assert (ort_eng.camera, ort_eng.world_frame, ort_eng.depth_range_m, ort_eng.has_rgb, ort_eng.has_depth) == (
        torch_eng.camera, torch_eng.world_frame, torch_eng.depth_range_m, torch_eng.has_rgb, torch_eng.has_depth,
    )  # fmt: skip
    T = _poses()
    T[2, :3, 3] = [500.0, 0.0, 30.0]  # out of bounds: flagged the same way
    a, b = torch_eng.render(T), ort_eng.render(T)
    assert a.rgb is not None and b.rgb is not None and a.depth is not None and b.depth is not None
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max() <= 1  # uint8 rounding of values ~1e-6 apart
    assert np.abs(a.depth - b.depth).max() <= DEPTH_TOL_M
    assert a.out_of_bounds.tolist() == b.out_of_bounds.tolist() == [False, False, True]
    if preset == "slice10":
        assert a.confidence is not None and b.confidence is not None
        assert np.abs(a.confidence - b.confidence).max() <= CONF_TOL
    else:
        assert a.confidence is None and b.confidence is None
    # the same messages: the render node's outputs through the ONNX engine
    from pose2rgbd.messages import TypestoreFactory, image_to_numpy, new_typestore, pose_stamped, register_custom_msgs
    from pose2rgbd.nodes import Renderer, RendererConfig

    F = TypestoreFactory(register_custom_msgs(new_typestore("humble")))
    msgs = []
    for eng in (torch_eng, ort_eng):
        r = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), eng, F)
        msgs.append(dict(r.on_pose(pose_stamped(F, 10**9, "map", T[1]), 10**9)))
    assert set(msgs[0]) == set(msgs[1]) and "depth/image_raw" in msgs[0] and "rgbd" in msgs[0]
    for topic in ("depth/image_raw", "rgb/image_raw"):
        a0, a1 = (image_to_numpy(m[topic]).astype(np.float64) for m in msgs)
        assert np.abs(a0 - a1).max() <= (DEPTH_TOL_M if topic.startswith("depth") else 1)
    assert msgs[0]["camera_info"].k.tolist() == msgs[1]["camera_info"].k.tolist()


def test_dynamic_batch_and_threads(exported: dict) -> None:
    onnx_path = exported["slice10"][1]
    eng = RenderEngine.from_config(_cfg(onnx_path, backend="onnxruntime", threads=1))
    T = _poses()
    whole = eng.render(T)
    one = eng.render(T[1])
    assert whole.depth is not None and one.depth is not None
    np.testing.assert_allclose(whole.depth[1], one.depth[0], atol=DEPTH_TOL_M)


def test_localize_engine_from_onnx_equals_torch(tmp_path: Path) -> None:
    register_family(LOC_FAMILY)
    try:
        ck = localize_checkpoint(tmp_path)
        p = export_onnx(load_checkpoint(ck), tmp_path / "loc.onnx", exporter="torchscript").path
        a, b = load_engine(_cfg(ck)), load_engine(_cfg(p))
        assert isinstance(b, LocalizeEngine) and b.backend.name == "onnxruntime" and b.world_frame == "odom"
        images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
        ra, rb = a.localize(images), b.localize(images)
        np.testing.assert_allclose(ra.T_world_cam, rb.T_world_cam, atol=1e-4)
        np.testing.assert_allclose(ra.confidence, rb.confidence, atol=1e-5)
    finally:
        unregister_family(LOC_FAMILY.kind)


def test_backend_file_and_precision_mismatches(exported: dict) -> None:
    ck, onnx_path = exported["base"]
    with pytest.raises(ConfigError, match=r"engine.backend torch cannot run .*\(an exported ONNX file\)"):
        RenderEngine.from_config(_cfg(onnx_path, backend="torch"))
    on_the_fly = RenderEngine.from_config(_cfg(ck, backend="onnxruntime"))  # a .pt exported at start
    assert on_the_fly.backend.name == "onnxruntime"
    T = _poses()
    a, b = on_the_fly.render(T), RenderEngine.from_config(_cfg(onnx_path)).render(T)
    assert a.depth is not None and b.depth is not None and np.abs(a.depth - b.depth).max() <= DEPTH_TOL_M
    with pytest.raises(ConfigError, match="onnxruntime backend runs the exported fp32 graph"):
        RenderEngine.from_config(_cfg(onnx_path, precision="bf16"))
    with pytest.raises(CheckpointError, match="output size is 64, expected 128"):
        RenderEngine.from_config(_cfg(onnx_path, expect_size=128))  # expectations checked as for a .pt
    with pytest.raises(ConfigError, match="backend"):
        EngineConfig(backend="tensorrt")
    text = onnx_path.parent / "plain.onnx"
    text.write_text("not onnx")
    with pytest.raises(CheckpointError, match="cannot read the ONNX file"):
        RenderEngine.from_config(_cfg(text))


def test_lookahead_miss_renders_one_pose_and_predictions_come_from_the_cache() -> None:
    eng = RenderEngine(
        EngineConfig(warmup=0, device="cpu", precision="fp32", lookahead=3, tolerance_m=0.05, tolerance_deg=0.5),
        make_ground_plane_checkpoint(32),
    )
    period = 100_000_000
    eng.render_lookahead(look_down_pose(0.0, 0.0, 20.0), 0)
    before = dict(eng.stats)
    miss = eng.render_lookahead(look_down_pose(1.0, 0.0, 20.0), period)  # 10 m/s east
    assert not miss.from_cache[0]
    assert eng.stats["inline_frames"] - before["inline_frames"] == 1  # one render on the request path ...
    assert eng.stats["renders"] - before["renders"] >= 1
    assert eng.wait_lookahead()
    assert eng.stats["ahead_frames"] == 3  # ... and the 3 predictions in the background
    assert eng._worker is not None and eng._worker.is_alive()
    hits = []
    for k in (2, 3, 4):  # the predicted poses are served from the cache, no inline render
        hits.append(eng.render_lookahead(look_down_pose(float(k), 0.0, 20.0), k * period))
        assert hits[-1].from_cache[0] and eng.stats["inline_frames"] == 2
        assert eng.wait_lookahead()
    assert eng.stats["cache_hits"] == 3 and eng.stats["cache_misses"] == 2
    assert eng.stats["ahead_frames"] == 3 + 3  # the window moved on by one frame per request
    for k, hit in zip((2, 3, 4), hits, strict=True):
        np.testing.assert_array_equal(hit.depth, eng.render(look_down_pose(float(k), 0.0, 20.0)).depth)
    worker = eng._worker
    eng.close()  # also run at interpreter exit: the thread leaves after its frame
    assert worker is not None and not worker.is_alive()
    late = eng.render_lookahead(look_down_pose(9.0, 0.0, 20.0), 9 * period)  # still serves, inline only
    assert not late.from_cache[0] and eng.wait_lookahead(0.1) and eng._worker is None


def test_bf16_without_native_support_is_warned_about_or_refused(monkeypatch, caplog) -> None:
    import pose2rgbd.models.device as device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    ck = make_ground_plane_checkpoint(16)
    with caplog.at_level(logging.WARNING):
        eng = RenderEngine(EngineConfig(warmup=0, device="cpu", precision="bf16"), ck)
    assert eng.precision == "bf16"
    assert any("without native bf16" in r.message and "use precision fp32" in r.message for r in caplog.records)
    with pytest.raises(ConfigError, match=r"refused: engine\.slow_precision is refuse"):
        RenderEngine(EngineConfig(warmup=0, device="cpu", precision="bf16", slow_precision="refuse"), ck)
    RenderEngine(EngineConfig(warmup=0, device="cpu", precision="fp32", slow_precision="refuse"), ck)  # fine
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        RenderEngine(EngineConfig(warmup=0, device="cpu", precision="bf16", slow_precision="refuse"), ck)
    assert not any("native bf16" in r.message for r in caplog.records)


def test_precision_auto_serves_the_hybrid_at_bf16_where_the_cpu_has_it_and_nothing_else(monkeypatch) -> None:
    """engine.precision auto on CPU: bf16 for the hybrid (its kind declares it safe) on a CPU with native bf16,
    fp32 for it elsewhere, fp32 for Base everywhere; its network part in ONNX Runtime stays fp32; an explicit fp32
    stays fp32."""
    import pose2rgbd.models.device as device
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint, query_poses

    hybrid = make_hybrid_checkpoint(64, 12, preset="hybrid-fast")
    plane = make_ground_plane_checkpoint(16)
    cfg = EngineConfig(warmup=0, device="cpu")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    served = RenderEngine(cfg, hybrid)
    assert served.precision == "bf16"
    assert RenderEngine(EngineConfig(warmup=0, device="cpu", precision="fp32"), hybrid).precision == "fp32"
    assert RenderEngine(cfg, plane).precision == "fp32"
    ort = RenderEngine(EngineConfig(warmup=0, device="cpu", backend="onnxruntime"), hybrid)
    assert (ort.backend.name, ort.precision) == ("torch+onnxruntime", "fp32")
    res = served.render(query_poses(1, n_keyframes=12)[0])  # it renders at bf16
    assert res.rgb is not None and res.depth is not None and np.isfinite(res.depth).any()
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert RenderEngine(cfg, hybrid).precision == "fp32"


def test_large_requests_are_split_into_max_batch_chunks() -> None:
    ck = make_ground_plane_checkpoint(32)
    T = np.stack([look_down_pose(float(i), 0.0, 10.0 + i) for i in range(5)])
    whole = RenderEngine(EngineConfig(warmup=0, device="cpu", max_batch=64), ck)
    split = RenderEngine(EngineConfig(warmup=0, device="cpu", max_batch=2), ck)
    a, b = whole.render(T), split.render(T)
    assert whole.stats["renders"] == 1 and split.stats["renders"] == 3 and split.stats["frames"] == 5
    for k in ("rgb", "depth", "confidence"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    auto = RenderEngine(EngineConfig(warmup=0, device="cpu"), ck)  # CPU auto: 512x512 pixels per call
    assert auto.max_batch == 256 and RenderEngine(
        EngineConfig(warmup=0), make_ground_plane_checkpoint(512)
    ).max_batch in (1, 1 << 30)


def test_optimized_torch_paths_match_the_reference(exported: dict) -> None:
    """The reference (the checkpoint's plain eval-mode module) is the oracle of every optimized torch path:
    BatchNorm folded, channels-last 3x3 convolutions, transposed convolutions in either layout (auto: timed)."""
    import torch
    from torch import nn

    from pose2rgbd.models.export import example_input

    ck = exported["slice10"][0]
    ref_model = load_checkpoint(ck).model.eval()
    x = example_input(ref_model, 3, seed=5)
    with torch.inference_mode():
        ref = ref_model(x)
    for tcl in ("off", "on", "auto"):
        eng = RenderEngine.from_config(_cfg(ck, precision="fp32", transposed_channels_last=tcl, warmup=0))
        out = eng.backend(x)
        for k in ("rgb", "depth", "confidence"):
            assert float((out[k].float() - ref[k]).abs().max()) <= 1e-5, (tcl, k)
        cl = [
            m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()
            for m in eng.backend.model.modules()
            if type(m) is nn.ConvTranspose2d
        ]
        if tcl == "on":
            assert all(cl)
        elif tcl == "off":
            assert not any(cl)
        else:
            assert all(cl) or not any(cl)
    with pytest.raises(ConfigError, match="transposed_channels_last"):
        EngineConfig(transposed_channels_last="maybe")


def test_backends_come_back_warm_and_the_engine_does_not_warm_again(exported: dict, monkeypatch) -> None:
    """``engine.warmup`` batch-1 passes of the network, made once, by ``make_backend``, whatever runs the network:
    the prepared torch module (counted by a forward hook its copies carry) and an ONNX Runtime session (its runs
    counted); the engine built on top makes none of its own, and timing the layouts (off here) adds none."""
    import torch

    from pose2rgbd.inference import backends

    ck, onnx_path = exported["slice10"]
    loaded = load_checkpoint(ck)
    batches: list[int] = []

    def count(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        batches.append(len(args[0]))

    loaded.model.register_forward_pre_hook(count)  # deep-copied with the module: the prepared copy counts too
    cfg = _cfg(ck, precision="fp32", transposed_channels_last="off", warmup=3)
    backend, _ = backends.make_backend(cfg, loaded)
    assert backend.name == "torch" and batches == [1, 1, 1]
    batches.clear()
    RenderEngine(cfg, loaded)
    assert batches == [1, 1, 1]

    runs: list[tuple[int, ...]] = []

    class CountingSession:
        def __init__(self, session: object) -> None:
            self.session = session

        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            runs.append(next(iter(feeds.values())).shape)
            return self.session.run(outputs, feeds)  # type: ignore[attr-defined,no-any-return]

        def __getattr__(self, name: str) -> object:
            return getattr(self.session, name)

    real = backends.ort_session
    monkeypatch.setattr(backends, "ort_session", lambda *a, **k: CountingSession(real(*a, **k)))
    eng = RenderEngine.from_config(_cfg(onnx_path, warmup=2))
    assert eng.backend.name == "onnxruntime" and runs == [(1, 7), (1, 7)]

"""The hybrid's renders through CUDA graphs (``engine.cuda_graphs``): the staging of a captured render -- the host's
keyframe search and gather, the device's warp, holes, network and corrections on the graph's own inputs -- gives the
eager render, for every batch size, query after query (a stale input would show), with the ground's depth and with the
border rule that labels holes on the host between two graphs. On a CPU the graphs are emulated (the same buffers and
calls, no capture); on CUDA (marker gpu) they are captured and replayed."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.models.cuda_graphs import CapturedCall, GraphCache
from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint, query_poses

SIZE = 64
N_KEY = 40


@pytest.fixture(scope="module")
def ck():
    """The default preset (8 fill channels, 3 levels; blended colours and depths, the keyframe from behind)."""
    return make_hybrid_checkpoint(SIZE, N_KEY, preset="hybrid-fast", neighbours=3)


def _variant(ck, border: str, ground: bool):
    m = copy.deepcopy(ck.model).eval()
    m.config.hole_border = border
    m._border_chosen = None
    if ground:  # the keyframes' ground (z = 0 under cameras 15-35 m up): the holes' depth bounded by it
        with torch.no_grad():
            m.ground_plane.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
        m._ground_values = None
        assert m.ground is not None
    return m


def _graphed(ck, border: str, ground: bool, queries: int | None = None):
    """A :func:`_variant` with CUDA graphs on (their staging emulated on the CPU) and the input of the first
    ``queries`` query poses (default: all)."""
    m = _variant(ck, border, ground)
    assert m.use_cuda_graphs(True, emulate=True)
    x, _ = m.poses_to_input(_queries()[:queries])
    return m, x


def _queries() -> np.ndarray:
    Q = query_poses(6, n_keyframes=N_KEY)
    far = Q[0].copy()
    far[:3, 3] += [40.0, -30.0, 5.0]  # far beyond the keyframes: mostly holes
    return np.concatenate([Q, far[None]])


def _eager(m, x: torch.Tensor) -> dict[str, torch.Tensor]:
    graphs, m._graphs = m._graphs, None
    try:
        return m(x)  # type: ignore[no-any-return]
    finally:
        m._graphs = graphs


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True, msg=k)


@pytest.mark.parametrize(("border", "ground"), [("background", False), ("background", True), ("nearest", True)])
def test_a_captured_render_is_the_eager_render_query_after_query(ck, border: str, ground: bool) -> None:
    m, x = _graphed(ck, border, ground)
    assert m.border_takes_nearest == (border == "nearest")
    graphs = m._graphs
    with torch.inference_mode():
        for rows in ([0], [1, 2, 3, 4], [5], [6], [2, 6, 0, 1], [3]):  # batch sizes 1 and 4, other queries each time
            got = m(x[rows])
            assert got["rgb"].shape[0] == len(rows)
            _equal(got, _eager(m, x[rows]))
        again = m(x[[5]])
        again["rgb"].add_(1.0)  # the caller's copy: the next render is not changed by it
        _equal(m(x[[5]]), _eager(m, x[[5]]))
    stages = 2 if border == "nearest" else 1  # the border's holes are labelled on the host between two graphs
    assert len(graphs) == 2 * stages and graphs.captures == 2 * stages and not graphs.failures


def test_training_and_gradients_and_exclusions_stay_eager(ck) -> None:
    m, x = _graphed(ck, "background", False, 2)
    with torch.no_grad():
        m(x)
    assert len(m._graphs) == 1
    m(x)  # gradients on: eager
    m.train()
    with torch.no_grad():
        m(x)
    m.eval()
    with torch.no_grad():
        assert m._graphs_apply(None)
        assert not m._graphs_apply((np.zeros(2), np.arange(2), np.ones(2)))  # training's exclusions
    assert len(m._graphs) == 1 and m._graphs.captures == 1


@pytest.mark.parametrize("border", ["background", "nearest"])
def test_a_failed_capture_is_said_once_and_the_render_runs_eagerly(ck, caplog, monkeypatch, border: str) -> None:
    m, x = _graphed(ck, border, True, 1)
    with torch.inference_mode():
        ref = _eager(m, x)
    captures = []
    finish, warp_inputs = m._finish, m.warp_inputs
    searches = []

    def broken(*a, **k):
        if torch.is_inference_mode_enabled() and len(captures) == 0:
            captures.append(1)
            raise RuntimeError("operation not permitted when stream is capturing")
        return finish(*a, **k)

    def counted(*a, **k):
        searches.append(1)
        return warp_inputs(*a, **k)

    monkeypatch.setattr(m, "warp_inputs", counted)
    monkeypatch.setattr(m, "_finish", broken)  # its first call, the capture, fails (as a host wait inside one would)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        _equal(m(x), ref)  # the eager pass, from the same keyframe search
        _equal(m(x), ref)
    assert len(captures) == 1 and len(searches) == 2  # captured once, not again; one search per render
    assert sum("CUDA graph capture failed" in r.message for r in caplog.records) == 1
    assert len(m._graphs.failures) == 1


def test_the_cache_holds_at_most_its_graphs_and_copies_start_empty(ck, caplog) -> None:
    cache = GraphCache(emulate=True)

    def double(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": 2 * t}

    with caplog.at_level(logging.WARNING):
        for i in range(GraphCache.MAX_GRAPHS + 3):
            call = cache.get(i, double, [torch.ones(i + 1)])
            assert (call is None) == (i >= GraphCache.MAX_GRAPHS)
    assert len(cache) == GraphCache.MAX_GRAPHS
    assert sum("the most kept" in r.message for r in caplog.records) == 1  # said once
    call = cache.get(0, double, [torch.ones(1)])
    assert call is not None
    torch.testing.assert_close(call(torch.full((1,), 3.0))["y"], torch.full((1,), 6.0))
    with pytest.raises(ValueError, match="takes 1 inputs, got 2"):
        call(torch.ones(1), torch.ones(1))
    assert len(copy.deepcopy(cache)) == 0
    m, x = _graphed(ck, "background", False, 1)
    with torch.inference_mode():
        m(x)
    assert len(m._graphs) == 1
    assert len(copy.deepcopy(m)._graphs) == 0  # the engine's prepared copy captures its own
    m.to("cpu")  # moved (or cast): graphs on the old tensors' memory are dropped
    assert len(m._graphs) == 0
    m.use_cuda_graphs(False)
    assert m._graphs is None


def test_what_a_graph_reads_besides_its_inputs_renews_the_graphs(ck) -> None:
    """A changed setting, weight or depth range is no stale graph: the graphs are captured again (on a GPU a kept
    graph would replay the old setting: the correction everywhere after rgb_correction holes, say)."""
    m, x = _graphed(ck, "background", True, 1)
    graphs = m._graphs
    with torch.inference_mode():
        m(x)
        m(x)
    assert graphs.captures == 1
    m.config.rgb_correction = "holes"
    with torch.inference_mode():
        _equal(m(x), _eager(m, x))
    assert graphs.captures == 2
    with torch.no_grad():
        next(m.fill.parameters()).mul_(1.5)  # a weight changed in place (an optimizer step, a state dict's load)
    with torch.inference_mode():
        _equal(m(x), _eager(m, x))
    assert graphs.captures == 3
    from pose2rgbd.models.normalization import DepthNormalizer

    m.set_depth_normalizer(DepthNormalizer(0.0, 60.0))
    with torch.inference_mode():
        _equal(m(x), _eager(m, x))
        m(x)
    assert graphs.captures == 4 and len(graphs) == 1  # the old ones dropped, not kept beside


def test_captured_calls_copy_new_inputs_into_their_own() -> None:
    seen = []

    def f(a: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(a.data_ptr())
        return {"y": a + 1}

    x = torch.zeros(3)
    call = CapturedCall(f, [x], emulate=True)
    assert call.inputs[0].data_ptr() != x.data_ptr()
    out = call(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(out["y"], torch.tensor([2.0, 3.0, 4.0]))
    assert set(seen) == {call.inputs[0].data_ptr()}  # always on the call's own input


def test_the_engine_setting(ck) -> None:
    with pytest.raises(ConfigError, match="cuda_graphs"):
        EngineConfig(cuda_graphs="yes")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        RenderEngine(EngineConfig(device="cpu", cuda_graphs="on", warmup=0), ck)
    assert EngineConfig().cuda_graphs == "auto"  # on a GPU, graphs; on a CPU, eager
    fused = copy.deepcopy(ck.model)
    fused.fused_input = object()  # the fused geometry has no captured path
    assert not fused.use_cuda_graphs(True, emulate=True) and fused._graphs is None
    eng = RenderEngine(EngineConfig(device="cpu", warmup=0), ck)  # auto on a CPU: eager
    assert eng.model._graphs is None and not eng.backend.cuda_graphs


@pytest.mark.gpu
@pytest.mark.parametrize(("border", "ground"), [("background", True), ("nearest", True)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_render_as_the_eager_engine(ck, border: str, ground: bool, precision: str) -> None:
    from pose2rgbd.models.checkpoint import LoadedCheckpoint

    m = _variant(ck, border, ground)
    loaded = LoadedCheckpoint(**{**ck.__dict__, "model": m})
    Q = _queries()
    eager = RenderEngine(EngineConfig(device="cuda", precision=precision, cuda_graphs="off", warmup=1), loaded)
    graphed = RenderEngine(EngineConfig(device="cuda", precision=precision, cuda_graphs="on", warmup=1), loaded)
    assert graphed.backend.cuda_graphs and eager.model._graphs is None
    for rows in ([0], [1, 2, 3, 4], [6], [5], [2, 6, 0, 1]):
        a, b = eager.render(Q[rows]), graphed.render(Q[rows])
        differ = (np.abs(a.rgb.astype(int) - b.rgb) > 1).any(axis=-1)
        assert differ.mean() < 1e-3, rows
        np.testing.assert_array_equal(a.confidence, b.confidence)
        assert (~np.isclose(a.depth, b.depth, rtol=1e-4, atol=0, equal_nan=True)).mean() < 1e-3
    graphs = graphed.model._graphs
    assert graphs is not None and not graphs.failures and len(graphs) >= 2
    captured = graphs.captures
    for eng in (eager, graphed):  # a setting the graphs read changes: captured again, not replayed stale
        eng.model.config.rgb_correction = "holes"
    a, b = eager.render(Q[[0]]), graphed.render(Q[[0]])
    assert (np.abs(a.rgb.astype(int) - b.rgb) > 1).any(axis=-1).mean() < 1e-3
    assert graphs.captures > captured and not graphs.failures

"""The hybrid's fast serving paths give the reference renders: the numba warp against the torch splat (sky,
holes, unusable keyframes, batches), the engine's prepared model (BatchNorm folded, channels-last) and the network
part exported to ONNX Runtime against the plain torch model, and on CUDA (marker gpu) everything on the device."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.methods.hybrid.warp import warp_gathered
from pose2rgbd.testing.ground_plane import look_down_pose
from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint, query_poses

SIZE = 64
N_KEY = 40


@pytest.fixture(scope="module")
def ck():
    # 3 keyframes per query (the reprojection baseline's): the tie test below makes two of the three copies
    return make_hybrid_checkpoint(SIZE, N_KEY, preset="hybrid-lite", dense_channels=64, neighbours=3)


@pytest.fixture(scope="module")
def ck_decoder():
    """The same with a pose decoder (``model.decoder`` true: BatchNorm to fold, a pose input for ONNX Runtime)."""
    return make_hybrid_checkpoint(SIZE, N_KEY, preset="hybrid-lite", dense_channels=64, neighbours=3, decoder=True)


@pytest.fixture(scope="module")
def ck_default():
    """The kind's default preset, as `pose2rgbd train --method hybrid` makes it (8 fill channels, 3 levels)."""
    from pose2rgbd.models import get_family

    assert get_family("hybrid").default_preset == "hybrid-fast"
    return make_hybrid_checkpoint(SIZE, N_KEY, preset="hybrid-fast", neighbours=3)


@pytest.fixture(scope="module")
def ck_subpixel():
    """The fill at half resolution (``hybrid-subpixel``: 2x2 blocks as channels, a sub-pixel output)."""
    return make_hybrid_checkpoint(SIZE, N_KEY, preset="hybrid-subpixel", neighbours=3)


def _tilted(T: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    R = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    out = T.copy()
    out[:3, :3] = T[:3, :3] @ R
    return out


def _queries() -> np.ndarray:
    Q = query_poses(4, n_keyframes=N_KEY)
    # a camera tilted towards the horizon (holes where the keyframes saw nothing) and one far outside the
    # keyframes (mostly holes)
    return np.concatenate([Q, _tilted(Q[0], 50.0)[None], look_down_pose(60.0, 60.0, 30.0)[None]])


def _reference_config() -> EngineConfig:
    return EngineConfig(device="cpu", precision="fp32", fuse_bn=False, channels_last=False, warmup=0)


@pytest.mark.parametrize(("blend", "blend_depth"), [(0.0, False), (0.2, False), (0.2, True)])
def test_numba_warp_equals_the_torch_splat(ck, blend: float, blend_depth: bool) -> None:
    """Also with the keyframes' colours blended (``warp_colour blend``; weights of unequal size), and their depth
    (``warp_depth blend``)."""
    m = ck.model
    Q = _queries()
    rows, usable = m.select_keyframes(Q)
    usable[1, 0] = False  # the nearest keyframe unusable: holes fill from the next one
    usable[2, :] = False  # none usable: only holes, no colour, NaN depth -> 1
    rgb, depth, kf_T = m.gather_keyframes(rows)
    depth[0, :, :12] = float("inf")  # sky rows in the keyframes: splatted far; a surface wins over sky
    depth[0, 2, 20:24, 5:40] = float("nan")  # invalid depth never splats
    T = torch.linalg.inv(torch.from_numpy(Q))[:, None] @ kf_T
    args = (rgb, depth, T, m.kf_K, torch.from_numpy(usable))
    kw = {"blend_tolerance": blend, "weights": torch.tensor([[3.0, 1.0, 0.5]]).expand(len(Q), 3) if blend else None,
          "blend_depth": blend_depth}  # fmt: skip
    a = warp_gathered(*args, depth_min_m=0.0, depth_max_m=80.0, kernel="numba", **kw)
    b = warp_gathered(*args, depth_min_m=0.0, depth_max_m=80.0, kernel="torch", **kw)
    if blend:  # the blend is on: colours differ from the winner's alone where another keyframe sees the surface
        c = warp_gathered(*args, depth_min_m=0.0, depth_max_m=80.0, kernel="numba")
        assert (a["rgb"] != c["rgb"]).flatten(1).any(dim=0).float().mean() > 0.05
        assert torch.equal(a["valid"], c["valid"])
        moved = (a["depth"] != c["depth"]).float().mean()
        assert moved > 0.05 if blend_depth else moved == 0  # the depth blended only with blend_depth
    assert 0.2 < a["valid"].float().mean() < 0.95  # holes and splatted pixels both compared
    assert not a["valid"][2].any() and (a["rgb"][2] == 0).all() and (a["depth"][2] == 1).all()
    for k in ("rgb", "depth", "valid", "hits"):
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        blended = k == "rgb" or (k == "depth" and blend_depth)  # float rounding
        close = (a[k] - b[k]).abs() < 1e-6 if blended else a[k] == b[k]
        differ = (~close).flatten(1).any(dim=0) if blended else ~close
        # the same float64 arithmetic: only a point exactly on a half pixel may round the other way
        assert differ.float().mean() < 1e-3, (k, differ.float().mean())
    with pytest.raises(ValueError, match="kernel"):
        warp_gathered(*args, depth_min_m=0.0, depth_max_m=80.0, kernel="cuda")


@pytest.mark.parametrize("fallback", [0, 1])
def test_the_blend_agrees_across_kernels_with_sky_and_crowded_points(fallback: int) -> None:
    """Random keyframes with sky, invalid depth, an unusable keyframe and cameras that shrink the view (several
    points of one keyframe per query pixel, sky first at some): the numba blend equals the torch one; also with the
    last keyframe a fallback (the behind keyframe's rule: it lands only where the others left holes)."""
    rng = np.random.default_rng(4)
    B, k, S = 4, 4, 24
    rgb = torch.from_numpy(rng.integers(0, 256, (B, k, S, S, 3), dtype=np.uint8))
    d = rng.uniform(5.0, 9.0, (B, k, S, S)).astype(np.float32)
    d[rng.random(d.shape) < 0.3] = np.inf  # sky
    d[rng.random(d.shape) < 0.05] = np.nan
    K = torch.tensor([[20.0, 0.0, 11.5], [0.0, 20.0, 11.5], [0.0, 0.0, 1.0]])
    T = np.tile(np.eye(4), (B, k, 1, 1))
    T[..., 2, 3] = rng.uniform(2.0, 6.0, (B, k))  # backed away: a keyframe's points crowd into fewer query pixels
    T[..., 0, 3] = rng.uniform(-0.5, 0.5, (B, k))
    usable = np.ones((B, k), bool)
    usable[1, 2] = False
    args = (rgb, torch.from_numpy(d), torch.from_numpy(T), K, torch.from_numpy(usable))
    kw = {"depth_min_m": 1.0, "depth_max_m": 20.0, "blend_tolerance": 0.2,
          "weights": torch.from_numpy(rng.uniform(0.5, 2.0, (B, k))), "fallback": fallback}  # fmt: skip
    a = warp_gathered(*args, kernel="numba", nearest_depth=True, **kw)
    b = warp_gathered(*args, kernel="torch", nearest_depth=True, **kw)
    assert "nearest_depth" not in warp_gathered(*args, kernel="numba", **kw)  # only where asked
    assert (a["hits"] * (k - fallback) > 1).float().mean() > 0.2 and a["valid"].float().mean() > 0.2
    if fallback:  # where the others landed: their answer alone; the fallback fills some of their holes
        main = warp_gathered(rgb[:, :-1], *(x[:, :-1] for x in args[1:3]), K, args[4][:, :-1], kernel="numba",
                             **{**kw, "weights": kw["weights"][:, :-1], "fallback": 0})  # fmt: skip
        v = main["valid"]
        assert torch.equal(a["rgb"][v.expand_as(a["rgb"])], main["rgb"][v.expand_as(a["rgb"])])
        assert torch.equal(a["depth"][v], main["depth"][v])
        assert (a["valid"] & ~v).any() and (a["valid"] | ~v).all()
        assert torch.equal(a["from_fallback"], a["valid"] & ~v)  # what the fallback alone landed on
    else:
        assert not a["from_fallback"].any()
    first = torch.from_numpy(usable).int().argmax(dim=1)
    near = torch.from_numpy(d)[torch.arange(B), first][:, None].clamp(1.0, 20.0)
    near = torch.where(torch.isnan(near), torch.full_like(near, 20.0), near)
    torch.testing.assert_close(a["nearest_depth"], 2.0 * (near - 1.0) / 19.0 - 1.0)  # the nearest keyframe's own
    for key in ("rgb", "depth", "valid", "hits", "from_fallback", "nearest_depth"):
        close = (a[key] - b[key]).abs() < 1e-5 if key == "rgb" else a[key] == b[key]
        assert close.float().mean() > 0.999, (key, close.float().mean())
    with pytest.raises(ValueError, match="weights"):
        warp_gathered(*args, kernel="numba", **{**kw, "weights": kw["weights"][:1]})


def test_the_numba_warp_breaks_ties_as_the_torch_splat(ck) -> None:
    """A keyframe point that ties with one of an earlier keyframe (same depth, same pixel) loses, as in the
    torch splat's z-buffer; the colours show which won."""
    m = ck.model
    Q = _queries()
    rows, usable = m.select_keyframes(Q)
    rgb, depth, kf_T = m.gather_keyframes(rows)
    # keyframe 1 = keyframe 0 in another colour: each of its points ties with one of keyframe 0 (which must win)
    rgb[:, 1], depth[:, 1] = 255 - rgb[:, 0], depth[:, 0]
    depth[0, :, :12] = float("inf")
    T = torch.linalg.inv(torch.from_numpy(Q))[:, None] @ kf_T
    T[:, 1] = T[:, 0]
    usable[0, 2] = False  # query 0: only the two copies
    args = (rgb, depth, T, m.kf_K, torch.from_numpy(usable))
    a = warp_gathered(*args, depth_min_m=0.0, depth_max_m=80.0, kernel="numba")
    b = warp_gathered(*args, depth_min_m=0.0, depth_max_m=80.0, kernel="torch")
    assert a["valid"][0].float().mean() > 0.5
    assert (a["hits"][0][a["valid"][0]] * 3 == 2).all()  # both copies landed on every splatted pixel
    assert torch.equal(a["rgb"][0], b["rgb"][0])  # keyframe 0's colours
    assert not torch.equal(a["rgb"][0], ((255 - rgb[0, 0]).float() / 127.5 - 1).permute(2, 0, 1))


def test_points_behind_the_query_or_without_depth_land_nowhere() -> None:
    """A keyframe with zero, negative and NaN depth among its pixels, seen by three queries: one 7 m ahead of it (its
    surface, 5-30 m away, straddles the query's image plane: points behind it, on it, just in front and far outside
    the view), one turned to face the keyframe (a negative depth would land in front of it) and one whose image
    plane lies 0.5 mm in front of the point on the keyframe's optical axis (closer than the warp's 1 mm). The pixels
    the numba warp lands on are those a plain projection of the points with positive depth and more than 1 mm in
    front of the query gives, and the torch splat agrees."""
    from pose2rgbd.methods.hybrid.warp import EPS_Z, splat_numba

    rng = np.random.default_rng(7)
    S, c = 33, 16  # odd: pixel (16, 16) lies on the optical axis
    d = rng.uniform(5.0, 30.0, (S, S)).astype(np.float32)
    d[:3] = 0.0
    d[3:5] = -4.0
    d[5:7, ::3] = np.nan
    d[c, c] = 7.0
    K = np.array([[30.0, 0.0, c], [0.0, 30.0, c], [0.0, 0.0, 1.0]])
    T = np.tile(np.eye(4), (3, 1, 1, 1))
    T[0, 0, 2, 3], T[0, 0, 0, 3] = -7.0, 0.3
    T[1, 0, :3, :3] = np.diag([-1.0, 1.0, -1.0])  # turned around: z = -depth
    T[2, 0, 2, 3] = -(7.0 - 5e-4)  # the axis point 0.5 mm in front of the query
    rgb = rng.integers(0, 256, (3, 1, S, S, 3), dtype=np.uint8)
    depth = np.broadcast_to(d, (3, 1, S, S)).copy()
    usable = np.ones((3, 1), bool)
    out = splat_numba(rgb, depth, T, K, usable, 2e4)
    v, u = np.mgrid[0:S, 0:S]
    z_src = d.astype(np.float64)
    pts = np.stack([(u - c) / 30.0 * z_src, (v - c) / 30.0 * z_src, z_src, np.ones_like(z_src)], -1)
    for b in range(3):
        x, y, z, _ = np.moveaxis(pts @ T[b, 0].T, -1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            fu, fv = np.rint(30.0 * x / z + c), np.rint(30.0 * y / z + c)
            ok = (z_src > 0) & (z > EPS_Z) & (fu >= 0) & (fu < S) & (fv >= 0) & (fv < S)
        expected = np.zeros((S, S), bool)
        expected[fv[ok].astype(int), fu[ok].astype(int)] = True
        assert np.array_equal(out[2][b], expected), b
    assert 0.05 < out[2][0].mean() < 0.9  # query 0: some points land, many do not
    assert not out[2][1].any()  # turned around: the points in front of it have negative depth
    assert not out[2][2, c, c]  # only the axis point, 0.5 mm in front, would land there
    ref = warp_gathered(*(torch.from_numpy(a) for a in (rgb, depth, T, K, usable)), depth_min_m=0.0,
                        depth_max_m=20.0, kernel="torch")  # fmt: skip
    assert np.array_equal(ref["valid"][:, 0].numpy(), out[2])


def _crowded_keyframes(B: int, k: int, S: int, seed: int) -> tuple:
    """Random keyframes with sky, invalid depth and an unusable keyframe whose points crowd into fewer query pixels;
    keyframe 2 is a recoloured copy of keyframe 0 at the same pose (each of its points ties with one of keyframe
    0's, which must win), so a split into groups {0, 1}, {2, ...} has to break ties across the groups."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (B, k, S, S, 3), dtype=np.uint8)
    d = rng.uniform(5.0, 9.0, (B, k, S, S)).astype(np.float32)
    d[rng.random(d.shape) < 0.3] = np.inf
    d[rng.random(d.shape) < 0.05] = np.nan
    K = np.array([[20.0, 0.0, S / 2 - 0.5], [0.0, 20.0, S / 2 - 0.5], [0.0, 0.0, 1.0]])
    T = np.tile(np.eye(4), (B, k, 1, 1))
    T[..., 2, 3] = rng.uniform(2.0, 6.0, (B, k))
    T[..., 0, 3] = rng.uniform(-0.5, 0.5, (B, k))
    rgb[:, 2], d[:, 2], T[:, 2] = 255 - rgb[:, 0], d[:, 0], T[:, 0]
    usable = np.ones((B, k), bool)
    usable[-1, 3] = False
    return rgb, d, T, K, usable, rng.uniform(0.5, 2.0, (B, k))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize(("blend", "blend_depth", "blend_colour", "fallback"), [
    (0.0, False, True, 0), (0.0, False, True, 1), (0.2, True, True, 1), (0.2, False, True, 0), (0.2, True, False, 2),
])  # fmt: skip
def test_the_numba_warp_gives_the_same_answer_on_any_number_of_threads(
    B: int, blend: float, blend_depth: bool, blend_colour: bool, fallback: int
) -> None:
    """Split over queries (B > 1) or, for one query, over its main keyframes (each group its own z-buffer, merged,
    then the fallback keyframe): bit for bit the answer of one thread, ties across the groups included."""
    from pose2rgbd.methods.hybrid.warp import splat_numba

    rgb, d, T, K, usable, w = _crowded_keyframes(B, 6, 24, seed=B)
    kw = {"blend_tolerance": blend, "weights": w if blend else None, "fallback": fallback, "blend_depth": blend_depth,
          "blend_colour": blend_colour}  # fmt: skip
    one = splat_numba(rgb, d, T, K, usable, 2e4, **kw)
    valid = one[2]
    assert 0.3 < valid.mean() < 1.0 and one[3][valid].max() >= 3  # holes, and pixels where several keyframes land
    if fallback:
        assert one[4].any()
    for threads in (2, 3, 8):  # 8: more threads than queries or keyframes
        many = splat_numba(rgb, d, T, K, usable, 2e4, threads=threads, **kw)
        for name, a, b in zip(("rgb", "z", "valid", "hits", "from_fallback"), one, many):
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), (threads, name)
    if not blend:  # the ties between keyframe 0 and its copy decide pixels: the copy first, other colours
        order = [2, 1, 0, 3, 4, 5]
        swapped = splat_numba(rgb[:, order], d[:, order], T[:, order], K, usable[:, order], 2e4, **kw)
        assert (swapped[0] != one[0]).any(axis=1).mean() > 0.05


def test_the_warp_splits_over_threads_only_on_large_frames(monkeypatch) -> None:
    """The numba warp takes torch's thread count from 512x512 query pixels on, one thread below; an explicit
    ``threads`` wins; a task's error reaches the caller."""
    from pose2rgbd.methods.hybrid import warp

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert warp.warp_threads(256 * 256) == 1 and warp.warp_threads(4 * 256 * 256) == 3
    assert warp.warp_threads(512 * 512) == 3
    seen: list[int] = []

    def spy(*args: object, threads: int = 1, **kw: object):
        seen.append(threads)
        raise RuntimeError("stop")

    monkeypatch.setattr(warp, "splat_numba", spy)
    rgb, d, T, K, usable, _ = _crowded_keyframes(1, 4, 8, seed=0)
    args = (torch.from_numpy(rgb), torch.from_numpy(d), torch.from_numpy(T), torch.from_numpy(K),
            torch.from_numpy(usable))  # fmt: skip
    for threads in (None, 2):
        with pytest.raises(RuntimeError):
            warp.warp_gathered(*args, depth_min_m=1.0, depth_max_m=20.0, kernel="numba", threads=threads)
    assert seen == [1, 2]

    def boom() -> None:
        raise ValueError("in a worker")

    with pytest.raises(ValueError, match="in a worker"):
        warp._POOL.run([lambda: None, boom])
    warp._POOL.run([])  # nothing to do: nothing done


def test_the_warp_pool_raises_when_it_cannot_start_a_thread(monkeypatch) -> None:
    """A worker that cannot be started (a process's thread limit) is an error, not a reason to run its task here
    too: the executor may have queued it already. At interpreter shutdown the tasks run in turn on the caller."""
    from concurrent.futures import ThreadPoolExecutor

    from pose2rgbd.methods.hybrid import warp

    ran: list[int] = []
    for message, raised in (("can't start new thread", True), ("cannot schedule new futures after interpreter "
                                                                "shutdown", False)):  # fmt: skip
        ran.clear()

        def refuse(self, fn, *a, message=message, **kw):
            raise RuntimeError(message)

        pool = warp._Pool()
        monkeypatch.setattr(ThreadPoolExecutor, "submit", refuse)
        if raised:
            with pytest.raises(RuntimeError, match="start new thread"):
                pool.run([lambda: ran.append(0), lambda: ran.append(1)])
            assert ran == []
        else:
            pool.run([lambda: ran.append(0), lambda: ran.append(1)])
            assert ran == [0, 1]
        monkeypatch.undo()


def test_the_warp_pool_serves_callers_on_several_threads_at_once() -> None:
    """A render node warps on its executor's and its look-ahead's threads: callers asking for different numbers of
    tasks at the same time (the pool grows meanwhile) all get every task run."""
    import threading

    from pose2rgbd.methods.hybrid import warp

    errors: list[BaseException] = []
    counts: list[int] = []

    def caller(n: int) -> None:
        try:
            for _ in range(40):
                done: list[int] = []
                warp._POOL.run([functools.partial(done.append, i) for i in range(n)])
                counts.append(len(done) - n)
        except BaseException as e:
            errors.append(e)

    callers = [threading.Thread(target=caller, args=(n,)) for n in (2, 3, 5, 9, 4, 7)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert not errors and len(counts) == 240 and not any(counts)


def test_float16_depth_reaches_the_warp_as_torch_converts_it() -> None:
    """Every float16 value (the keyframe store's depth) through the warp's table equals torch's conversion; NaN
    stays NaN; other dtypes are converted by torch; a non-contiguous tensor too."""
    from pose2rgbd.methods.hybrid.warp import _depth_float32

    every = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).reshape(256, 256)
    got, want = _depth_float32(every), every.float().numpy()
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, want, equal_nan=True) and np.isnan(got).sum() == 2046
    assert np.array_equal(_depth_float32(every.t()), every.t().float().numpy(), equal_nan=True)
    d64 = torch.rand(3, 4, dtype=torch.float64)
    assert np.array_equal(_depth_float32(d64), d64.float().numpy())


def _split_in_child(q) -> None:
    from pose2rgbd.methods.hybrid import warp

    done: list[int] = []
    warp._POOL.run([lambda: done.append(0), lambda: done.append(1)])
    q.put(sorted(done))


def test_the_warp_pool_works_in_a_forked_child() -> None:
    """A child forked after the parent's pool started (a data loader's worker) has the pool object but none of its
    threads: the child starts its own instead of waiting forever on the parent's."""
    import multiprocessing

    from pose2rgbd.methods.hybrid import warp

    warp._POOL.run([lambda: None, lambda: None])  # the parent's pool, started
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_split_in_child, args=(q,))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert q.get(timeout=5) == [0, 1]


@pytest.mark.parametrize("name", ["ck", "ck_decoder"])
def test_weights_stored_in_bf16_render_as_autocast_casting_them(name: str, request) -> None:
    """A bf16 serving copy keeps its convolution and linear weights in bf16 (no cast per call): the same outputs,
    bit for bit, as the copy whose fp32 weights autocast casts at every call; fp32 copies are left alone. With and
    without a pose decoder (its linear and transposed layers)."""
    from pose2rgbd.models.device import AUTOCAST_LAYERS, autocast, prepare_for_serving

    ck = request.getfixturevalue(name)
    dev = torch.device("cpu")
    kw = {"fuse_bn": True, "channels_last": True, "transposed_channels_last": "off"}
    stored = prepare_for_serving(ck.model, dev, "bf16", **kw)
    cast = prepare_for_serving(ck.model, dev, "bf16", cast_weights=False, **kw)
    fp32 = prepare_for_serving(ck.model, dev, "fp32", **kw)
    layers = [m for m in stored.modules() if isinstance(m, AUTOCAST_LAYERS)]
    assert len(layers) > 5 and all(m.weight.dtype == torch.bfloat16 for m in layers)
    assert all(m.weight.dtype == torch.float32 for m in cast.modules() if isinstance(m, AUTOCAST_LAYERS))
    assert all(m.weight.dtype == torch.float32 for m in fp32.modules() if isinstance(m, AUTOCAST_LAYERS))
    assert next(ck.model.parameters()).dtype == torch.float32  # the checkpoint's own model untouched
    Q = _queries()
    x, _ = ck.model.poses_to_input(Q)
    with torch.inference_mode(), autocast(dev, "bf16"):
        a, b = stored(x, Q), cast(x, Q)
    for k in ("rgb", "depth", "confidence"):
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", ["ck", "ck_decoder", "ck_default", "ck_subpixel"])
def test_the_prepared_and_the_onnxruntime_engines_render_as_the_reference(name: str, request) -> None:
    ck = request.getfixturevalue(name)
    assert (ck.model.decoder is not None) == (name == "ck_decoder")
    Q = _queries()
    ref = RenderEngine(_reference_config(), ck).render(Q)
    fast = RenderEngine(EngineConfig(device="cpu", warmup=1, precision="fp32"), ck)  # BatchNorm folded, channels-last
    ort = RenderEngine(EngineConfig(device="cpu", backend="onnxruntime", warmup=1), ck)
    assert ort.backend.name == "torch+onnxruntime" and fast.backend.name == "torch"
    assert ck.model.network_runner is None  # the checkpoint's own model is untouched
    for eng in (fast, ort):
        got = eng.render(Q)
        assert np.abs(got.rgb.astype(int) - ref.rgb).max() <= 1
        np.testing.assert_array_equal(np.isnan(got.depth), np.isnan(ref.depth))
        np.testing.assert_allclose(got.depth, ref.depth, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(got.confidence, ref.confidence)
    # the fill network's correction is part of what was compared (its output layer is not zero here)
    warped_only = ck.model.warp(Q)["rgb"]
    assert not torch.allclose(torch.from_numpy(ref.rgb).float(), (warped_only.permute(0, 2, 3, 1) + 1) * 127.5)


def test_onnxruntime_serving_refuses_other_precisions_and_whole_model_export(ck, tmp_path) -> None:
    from pose2rgbd.models.export import export_onnx

    with pytest.raises(ConfigError, match="fp32"):
        RenderEngine(EngineConfig(device="cpu", backend="onnxruntime", precision="bf16", warmup=0), ck)
    with pytest.raises(CheckpointError, match=r"fill network \(and decoder\) then run in ONNX Runtime"):
        export_onnx(ck, tmp_path / "h.onnx")
    assert not (tmp_path / "h.onnx").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ck", "ck_default"])
def test_cuda_keeps_the_render_on_the_device_and_matches_the_cpu(name: str, request) -> None:
    ck = request.getfixturevalue(name)
    Q = _queries()
    ref = RenderEngine(_reference_config(), ck).render(Q)
    eng = RenderEngine(EngineConfig(device="cuda", precision="fp32", warmup=1), ck)
    m = eng.model
    assert all(t.device.type == "cuda" for t in m.gather_keyframes(m.select_keyframes(Q)[0]))  # moved to the GPU
    w = m.warp(Q)
    assert all(v.device.type == "cuda" for v in w.values())  # the warp runs there (torch splat)
    got = eng.render(Q)
    differ = (np.abs(got.rgb.astype(int) - ref.rgb) > 2).any(axis=-1)
    assert differ.mean() < 2e-3  # cuDNN convolutions: float rounding, and points at an exact half pixel
    np.testing.assert_allclose(got.confidence, ref.confidence, atol=0, rtol=0)
    # the depth too: the hole rules and the ground's depth run in torch there (numba / numpy on the CPU)
    assert (~np.isclose(got.depth, ref.depth, rtol=1e-3, atol=0, equal_nan=True)).mean() < 2e-3


def test_the_prepared_model_shares_the_keyframes_instead_of_copying_them(ck) -> None:
    """The engine keeps the loaded checkpoint and serves a prepared copy of its model: copied keyframes (and
    their cache of decoded ones) would be resident twice (hundreds of MiB)."""
    eng = RenderEngine(EngineConfig(device="cpu", warmup=0, precision="fp32"), ck)
    prepared = eng.model
    assert prepared is not ck.model
    assert prepared.keyframes is ck.model.keyframes
    conv = prepared.fill.stem[0][0]
    assert conv.weight.data_ptr() != ck.model.fill.stem[0][0].weight.data_ptr()  # parameters are still copied
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert ck.model.fill.stem[0][0].weight.is_contiguous()  # ... and the caller's model keeps its layout
    Q = _queries()
    ref = RenderEngine(_reference_config(), ck).render(Q)
    np.testing.assert_allclose(eng.render(Q).depth, ref.depth, rtol=1e-4, atol=1e-4)


def test_keyframes_on_a_device_cross_once_and_a_model_copy_starts_without_them(ck) -> None:
    """On a GPU, gather_keyframes keeps each keyframe there after its first use (KeyframesOnDevice, exercised here
    on the CPU device); the engine's prepared copy of a model does not copy them."""
    from pose2rgbd.methods.hybrid.net import KeyframesOnDevice

    sized = ck.model.keyframes
    on = KeyframesOnDevice(sized, torch.device("cpu"))
    rgb, depth = on.get(3)
    want_rgb, want_depth = sized.get(3)
    assert np.array_equal(rgb.numpy(), want_rgb) and np.array_equal(depth.numpy(), want_depth, equal_nan=True)
    misses = sized.cache_stats()["misses"]
    hits = sized.cache_stats()["hits"]
    assert on.get(3)[0] is rgb  # kept: not read from the host view again
    assert sized.cache_stats()["hits"] == hits and sized.cache_stats()["misses"] == misses
    assert on._cache.size == min(sized.cache_keyframes, KeyframesOnDevice.MAX_KEPT) > 0
    m = copy.deepcopy(ck.model)  # no model holds one here; set it as a GPU render would have
    ck.model._keyframes_on_device = on
    try:
        assert copy.deepcopy(ck.model)._keyframes_on_device is None
    finally:
        ck.model._keyframes_on_device = None
    assert m.keyframes is sized


def test_keyframes_gathered_on_a_device_are_the_hosts(ck) -> None:
    """gather_keyframes on a GPU (gather_keyframes_on, exercised with the CPU device) gives what the host gathers,
    repeated rows too; gathering on the CPU again, or other keyframes, drops the device's copies."""
    m = copy.deepcopy(ck.model)
    rows = np.array([[3, 1, 3], [0, 1, 2]])
    want = m.keyframes.gather(rows)
    got = m.gather_keyframes_on(rows, torch.device("cpu"))
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.numpy(), w, equal_nan=True)
    assert m._keyframes_on_device is not None
    m.gather_keyframes(rows)  # the model on the CPU: no copies kept
    assert m._keyframes_on_device is None
    m.gather_keyframes_on(rows, torch.device("cpu"))
    m.use_keyframes(m.keyframes.keyframes)
    assert m._keyframes_on_device is None


@pytest.mark.parametrize("decoder", [False, True])
def test_a_hybrid_without_decoder_flags_positions_not_the_rotation_box(decoder: bool) -> None:
    """A survey flight's camera looks straight down: qw is near 0 at every heading, so the box of the training
    quaternions is a sliver that a degree of roll leaves. The default hybrid (no decoder: no network sees the pose)
    flags only a position outside the keyframes' box; with a decoder, which takes the encoded pose, the rotation
    too, but only a turn past the rotation's margin (at least ROTATION_MARGIN_DEG, 5 deg): not a degree of roll."""
    from scipy.spatial.transform import Rotation

    from pose2rgbd.models import PoseNormalizer
    from pose2rgbd.testing.ground_plane import look_down_pose
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

    rng = np.random.default_rng(0)
    T = np.stack([look_down_pose(rng.uniform(-50, 50), rng.uniform(-50, 50), 30.0) for _ in range(200)])
    T[:, :3, :3] = T[:, :3, :3] @ Rotation.from_rotvec(rng.normal(0, 0.02, (200, 3))).as_matrix()  # some wobble
    model = make_hybrid_checkpoint(64, 8, preset="hybrid-fast", decoder=decoder).model
    model.set_pose_normalizer(PoseNormalizer.fit(T, "6dof-quat"))
    rolled = T.copy()
    rolled[:, :3, :3] = rolled[:, :3, :3] @ Rotation.from_rotvec([0.0, 0.0, 0.03]).as_matrix()  # 1.7 deg roll
    turned = T.copy()
    turned[:, :3, :3] = turned[:, :3, :3] @ Rotation.from_rotvec([0.0, 0.0, 0.35]).as_matrix()  # 20 deg
    far = T[:10].copy()
    far[:, 0, 3] += 500.0  # 500 m beyond the place
    assert not model.out_of_bounds(T).any()
    assert model.out_of_bounds(far).all()
    _, oob = model.poses_to_input(rolled)
    assert np.array_equal(oob, model.out_of_bounds(rolled))  # one rule for both paths
    assert not oob.any()  # within the rotation's margin; the position box none
    _, oob = model.poses_to_input(turned)
    assert np.array_equal(oob, model.out_of_bounds(turned))
    assert oob.all() == decoder and oob.any() == decoder  # past it: flagged where a network sees the pose


@pytest.mark.parametrize("decoder", [False, True])
def test_the_position_box_is_widened_by_the_same_metres_on_every_side(decoder: bool) -> None:
    """A walk's keyframes span 20 m along the street and 0.4 m in height. The box is widened by the same metres on
    every side (margin 0.1 x half the widest side: 1 m), so a camera 2 cm or 0.8 m below every keyframe is inside and
    1.5 m below is outside, with a decoder or without: one rule for every model (a share of each side's own length
    put 2 cm below the height's 0.4 m outside)."""
    from pose2rgbd.models import PoseNormalizer
    from pose2rgbd.testing.ground_plane import look_down_pose
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

    rng = np.random.default_rng(1)
    T = np.stack([look_down_pose(x, 0.0, 1.6 + 0.4 * rng.uniform()) for x in np.linspace(0.0, 20.0, 100)])
    model = make_hybrid_checkpoint(64, 8, preset="hybrid-fast", decoder=decoder).model
    model.set_pose_normalizer(PoseNormalizer.fit(T, "6dof-quat"))
    low = float(T[:, 2, 3].min())
    probes = np.repeat(T[50:51], 4, axis=0)
    probes[:, 2, 3] = low - np.array([0.02, 0.8, 1.5, -0.1])  # 2 cm, 0.8 m, 1.5 m below the lowest; one inside
    oob = model.out_of_bounds(probes)
    assert oob.tolist() == [False, False, True, False], oob
    _, oob_input = model.poses_to_input(probes)
    assert np.array_equal(oob, oob_input)  # one rule for both paths

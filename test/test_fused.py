"""The fused geometry of a place (pose2rgbd.placemap.fused): TSDF fusion, ray casting, visibility, exposure, storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fused_scene import render_truth, ring_keyframes, ring_poses, scene_mesh

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.fused import ArrayKeyframes, FusedGeometry, FusionConfig, fuse_keyframes
from pose2rgbd.placemap.fused.render import FusedRenderer

CAM = PinholeCamera.from_fov(160, 120, 70.0)


@pytest.fixture(scope="module")
def ring() -> tuple[ArrayKeyframes, FusedGeometry]:
    kf, _ = ring_keyframes(12, CAM)
    return kf, fuse_keyframes(kf, FusionConfig(exposure=False))


def test_fused_depth_at_a_held_out_pose_is_within_a_voxel(ring: tuple[ArrayKeyframes, FusedGeometry]) -> None:
    geo = ring[1]
    assert 0.01 < geo.voxel_size < 0.1  # auto: centimetres for a scene 3 m away
    T = ring_poses(1, radius=2.6, height=1.9, phase=0.26)[0]  # between the keyframes, nearer and higher
    _, truth = render_truth(T, CAM)
    depth = geo.raycast(T, CAM)
    seen = np.isfinite(truth)
    both = seen & np.isfinite(depth)
    assert both.sum() >= 0.95 * seen.sum()  # the surface covers what the keyframes saw
    err = np.abs(depth[both] - truth[both])
    assert np.mean(err <= geo.voxel_size) >= 0.97
    assert np.median(err) <= 0.25 * geo.voxel_size  # no bias (a half-pixel lookup shift gave half a voxel)


def test_fused_render_colours_a_held_out_view(ring: tuple[ArrayKeyframes, FusedGeometry]) -> None:
    kf, geo = ring
    T = ring_poses(1, radius=2.6, height=1.9, phase=0.26)[0]
    rgb_t, _ = render_truth(T, CAM)
    view = FusedRenderer(kf, geo, neighbours=4).render(T, CAM)
    assert view.valid.sum() >= 0.9 * view.surface.sum()
    assert np.abs(view.rgb.astype(float) - rgb_t)[view.valid].mean() < 3.0


def test_an_occluded_keyframe_does_not_colour_a_point() -> None:
    from fused_scene import look_at

    v, t = scene_mesh()
    geo = FusedGeometry(v, t, {"voxel_size_m": 0.02, "depth_max_m": 10.0})  # the exact surface
    X = np.array([[-1.2, 0.0, 0.0]])  # on the floor, behind the box as seen from +x
    T_front = look_at(np.array([-3.0, 0.3, 1.6]), np.array([-1.2, 0.0, 0.0]))  # sees it
    T_behind = look_at(np.array([3.0, 0.0, 1.6]), np.array([-1.2, 0.0, 0.0]))  # the box is in between
    views = [render_truth(T, CAM) for T in (T_front, T_behind)]
    rgb = np.stack([views[0][0], np.full_like(views[1][0], (255, 0, 0))])  # the hidden one would paint red
    no_depth = np.full_like(views[1][1], np.nan)  # the hidden keyframe's sensor lost its depth: only the fused
    kf = ArrayKeyframes(rgb, np.stack([views[0][1], no_depth]), np.stack([T_front, T_behind]), CAM)  # surface knows
    r = FusedRenderer(kf, geo, neighbours=2, exposure=False)
    assert r.visible(0, X)[0].tolist() == [True]
    assert r.visible(1, X)[0].tolist() == [False]  # projects inside its image, but the box hides it
    # a query looking at the point from the front: its colour is the front keyframe's, no red
    Tq = look_at(np.array([-2.6, -0.4, 1.2]), np.array([-1.2, 0.0, 0.0]))
    view = r.render(Tq, CAM)
    truth, _ = render_truth(Tq, CAM)
    centre = (CAM.height // 2, CAM.width // 2)
    assert view.valid[centre]
    assert np.abs(view.rgb[centre].astype(int) - truth[centre]).max() <= 3
    # the keyframe's own depth also hides a point: an occluder the fused surface does not have (a passer-by)
    d_front = views[0][1].copy()
    cy, cx = round(CAM.cy), round(CAM.cx)  # the point is at the image centre of the keyframe looking at it
    d_front[cy - 3 : cy + 4, cx - 3 : cx + 4] = 0.8
    kf2 = ArrayKeyframes(rgb, np.stack([d_front, no_depth]), np.stack([T_front, T_behind]), CAM)
    assert FusedRenderer(kf2, geo, neighbours=2).visible(0, X)[0].tolist() == [False]


def test_exposure_fit_recovers_known_gains_and_offsets() -> None:
    from pose2rgbd.placemap.fused.exposure import fit_exposure

    kf, _ = ring_keyframes(12, PinholeCamera.from_fov(96, 72, 70.0))
    rng = np.random.default_rng(3)
    n = len(kf)
    gain = rng.uniform(0.75, 1.25, (n, 3))
    offset = rng.uniform(-12.0, 12.0, (n, 3))
    raw = np.stack([kf.rgb(i) for i in range(n)]).astype(np.float64)
    shot = np.clip(np.rint(raw * gain[:, None, None] + offset[:, None, None]), 0, 255).astype(np.uint8)
    kf_shot = ArrayKeyframes(shot, np.stack([kf.depth(i) for i in range(n)]), kf.T_world_cam, kf.camera(0),
                             rot_weight_m=3.0)  # fmt: skip
    geo = FusedGeometry(*scene_mesh(), {"voxel_size_m": 0.03, "depth_max_m": 10.0})
    ab, stats = fit_exposure(kf_shot, geo.meta, neighbours=4, samples=400)
    assert stats["keyframes_fitted"] == n and stats["rms_after"] < 0.5 * stats["rms_before"]
    # corrected = a (g t + o) + b must be one affine function of the true colour t in every keyframe
    slope = ab[..., 0] * gain  # (n, 3)
    inter = ab[..., 0] * offset + ab[..., 1]
    assert np.all(np.abs(slope / slope.mean(axis=0) - 1.0) < 0.02)
    assert np.all(np.abs(inter - inter.mean(axis=0)) < 2.0)  # grey levels
    # rendering: every keyframe brought to the nearest keyframe's exposure (default), or to the mean keyframe's
    geo.exposure = ab
    cam = kf.camera(0)
    T = ring_poses(1, phase=0.05)[0]  # beside keyframe 0: it is the nearest
    truth, _ = render_truth(T, cam)
    for ref, g, o in (("nearest", gain[0], offset[0]), ("mean", slope.mean(axis=0), inter.mean(axis=0))):
        view = FusedRenderer(kf_shot, geo, exposure_reference=ref).render(T, cam)
        expect = np.clip(truth.astype(float) * g + o, 0, 255)
        ok = view.valid & np.all((expect > 8) & (expect < 247), axis=-1)
        assert np.abs(view.rgb.astype(float) - expect)[ok].mean() < 3.0, ref


def test_the_exposure_fit_decodes_a_keyframe_about_once() -> None:
    """The fit reads each keyframe with its nearest, in keyframe order: its own small cache of decoded keyframes
    (not the store's, which `map fuse` leaves off) decodes each about once, and the same samples come out without
    it."""
    from pose2rgbd.placemap.fused.exposure import covisible_pairs

    kf, _ = ring_keyframes(12, PinholeCamera.from_fov(96, 72, 70.0))
    reads = {"rgb": 0, "depth": 0}

    class Counted(ArrayKeyframes):
        def rgb(self, i: int) -> np.ndarray:
            reads["rgb"] += 1
            return super().rgb(i)

        def depth(self, i: int) -> np.ndarray:
            reads["depth"] += 1
            return super().depth(i)

    n = len(kf)
    counted = Counted(np.stack([kf.rgb(i) for i in range(n)]), np.stack([kf.depth(i) for i in range(n)]),
                      kf.T_world_cam, kf.camera(0), rot_weight_m=3.0)  # fmt: skip
    args = {"neighbours": 4, "samples": 50, "depth_max": 10.0, "tol_m": 0.06}
    kept = covisible_pairs(counted, **args)
    assert len(kept[0]) > 100
    assert reads["rgb"] <= n + 4 and reads["depth"] <= n + 4  # a ring: the last keyframes' nearest are the first
    reads.update(rgb=0, depth=0)
    none = covisible_pairs(counted, **args, keep_images=0)
    assert reads["rgb"] >= 3 * n  # each keyframe and its 4 nearest
    for a, b in zip(kept, none, strict=True):
        np.testing.assert_array_equal(a, b)


def test_map_fuse_stores_the_geometry_with_the_map(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.cli.main import main
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.format import MapError
    from pose2rgbd.placemap.fused import load_fused

    m = tmp_path / "map"
    shutil.copytree(map_world["map"], m)
    with pytest.raises(MapError, match="map fuse"):
        load_fused(m)
    assert main(["map", "fuse", "--map", str(m), "--no-progress", "--set", "tile_blocks=300"]) == 0
    geo = load_fused(m)
    pm = PlaceMap(m)
    assert geo.meta["keyframes"] == len(pm) and len(geo.triangles) > 1000
    assert geo.meta["tiles"] > 1 and f"fused in {geo.meta['tiles']} tiles" in capsys.readouterr().out
    assert geo.exposure is not None and geo.exposure.shape == (len(pm), 3, 2)
    assert 0.1 <= geo.voxel_size <= 5.0  # decimetres over a city (the simulator's, seen from the air)
    assert main(["map", "fuse", "--map", str(m), "--no-progress"]) != 0  # refuses to replace it silently
    assert not [p.name for p in m.iterdir() if p.name.startswith(".")]  # no partial folder left behind
    # a keyframe's own pose ray-casts to about its own depth where both exist
    d_kf = pm.depth(3)
    d = geo.raycast(pm.T_world_cam[3], pm.camera(3))
    both = np.isfinite(d) & np.isfinite(d_kf)
    assert both.mean() > 0.5
    assert np.median(np.abs(d[both] - d_kf[both])) < 2 * geo.voxel_size


@pytest.mark.parametrize("sky", ["inf", "nan", "far"])
def test_sky_and_far_field_do_not_become_a_wall(sky: str) -> None:
    """Cameras looking over the box towards the horizon: the sky is +inf (REP-118 'too far'), NaN (unverified,
    e.g. multi-view stereo found nothing there) or a finite depth beyond the depth limit (a network's guess for
    the far field). None of them leaves a surface: the fused mesh ends with the floor, and casting the sky rows
    from a keyframe meets nothing."""
    from fused_scene import look_at

    cams = np.stack([look_at(np.array([-2.5 + 0.1 * k, -0.2 * k, 1.2]), np.array([1.0, 0.0, 0.9])) for k in range(6)])
    views = [render_truth(T, CAM) for T in cams]
    rgb = np.stack([v[0] for v in views])
    depth = np.stack([v[1] for v in views])
    missed = ~np.isfinite(depth)  # rays over the 6 m floor: the sky
    assert missed[:, : CAM.height // 4].mean() > 0.5  # the view does have a sky
    depth[missed] = {"inf": np.inf, "nan": np.nan, "far": 40.0}[sky]
    limit = "12" if sky == "far" else "auto"
    geo = fuse_keyframes(ArrayKeyframes(rgb, depth, cams, CAM), FusionConfig(exposure=False, depth_max=limit))
    assert len(geo.triangles) > 100  # the floor and the box are there
    centres = np.asarray(cams[:, :3, 3])
    dist = np.linalg.norm(geo.vertices[:, None, :] - centres[None], axis=2).min(1)
    assert dist.max() < 9.0  # nothing near 40 m (or at any finite sky depth): the farthest floor corner is ~8 m
    sky_depth = geo.raycast(cams[2], CAM)[missed[2]]
    assert np.isnan(sky_depth).mean() > 0.95  # looking at the sky, the fused geometry has no wall there


def test_a_voxel_size_reads_the_same_in_every_message() -> None:
    """The log, `map fuse` and evaluate's baseline line all say a voxel size by one rule: cm below a metre."""
    from pose2rgbd.placemap.fused import voxel_words

    assert voxel_words(0.0134) == "1.3 cm" and voxel_words(0.918) == "91.8 cm"
    assert voxel_words(3.473) == "3.47 m" and voxel_words(1.0) == "1 m"


def _triangles(geo: FusedGeometry) -> np.ndarray:
    """The surface as a sorted array of triangles, each its three vertices' bytes in a fixed order: equal for two
    meshes with the same triangles, however their vertices are numbered or shared."""
    p = np.ascontiguousarray(geo.vertices[geo.triangles], np.float32)  # (T, 3, 3)
    v = np.sort(p.view(np.dtype((np.void, 12))).reshape(len(p), 3), axis=1)
    return np.sort(np.ascontiguousarray(v).view(np.dtype((np.void, 36))).ravel())


def test_a_place_fused_in_tiles_has_the_surface_of_one_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory is bounded by fusing in cells of at most `tile_blocks` voxel blocks and extracting at most
    `extract_blocks` at a time: the surface must be exactly the one a single grid over the place gives -- no
    triangle dropped or doubled where cells meet (each cell's grid has a one-block border; a triangle belongs to
    the cell of its centroid). And a cell's grid, sized to its blocks plus one batch, is never rehashed (Open3D
    doubles a hash map whose size plus a call's blocks exceed its capacity: three times the grid at that moment)."""
    from pose2rgbd.placemap.fused import tsdf

    kf, _ = ring_keyframes(12, CAM)
    one = fuse_keyframes(kf, FusionConfig(exposure=False))
    assert one.meta["tiles"] == 1 and one.meta["voxel_blocks"] > 600
    ref = _triangles(one)
    monkeypatch.setattr(tsdf, "_BATCH", 16)  # small, so that a frame's blocks come in several batches
    grids: list[tuple[int, int]] = []
    fuse_cell = tsdf._fuse_cell

    def watched(*a: object, **k: object) -> object:
        vbg = fuse_cell(*a, **k)  # type: ignore[arg-type]
        grids.append((vbg.hashmap().capacity(), a[1].blocks))  # type: ignore[attr-defined]
        return vbg

    monkeypatch.setattr(tsdf, "_fuse_cell", watched)
    for tiles, chunk in ((150, 10_000_000), (10_000_000, 64), (64, 64)):
        grids.clear()
        geo = fuse_keyframes(kf, FusionConfig(exposure=False, tile_blocks=tiles, extract_blocks=chunk))
        assert geo.meta["voxel_blocks"] == one.meta["voxel_blocks"]
        assert (geo.meta["tiles"] > 1) == (tiles < 1000)
        np.testing.assert_array_equal(_triangles(geo), ref)
        assert grids and all(cap == blocks + 16 for cap, blocks in grids)


def test_tiles_partition_space_and_hold_at_most_their_blocks() -> None:
    from pose2rgbd.placemap.fused.tsdf import tiles_of

    rng = np.random.default_rng(0)
    blocks = np.unique(rng.integers(-40, 40, (3000, 3)), axis=0)
    cells = tiles_of(blocks, 500)
    owners = np.zeros(len(blocks), int)
    for lo, hi in cells:
        inside = np.all((blocks >= lo) & (blocks < hi), axis=1)
        assert 0 < inside.sum() <= 500
        owners += inside
    assert np.all(owners == 1)  # every block in exactly one cell
    assert 6 <= len(cells) <= 8  # about ceil(2,990 / 500): cuts in proportion, not only halves (which give 8)
    far = np.array([[10**6, 0, 0]])  # the outer cells reach far beyond the blocks they were cut from
    assert sum(bool(np.all((far >= lo) & (far < hi))) for lo, hi in cells) == 1
    assert len(tiles_of(blocks, 10**6)) == 1


def test_the_depth_kept_for_the_cells_is_the_maps_own_codes_and_keeps_the_limit(tmp_path: Path) -> None:
    """A cell reads a keyframe's depth from the scratch copy the first pass kept (lz4 of the place map's 16-bit
    codes): the codes come back exactly; Open3D gets their metres with 0 (not integrated) for invalid and sky; and
    a keyframe counts as having depth exactly when a code's metres are below ``depth_max``."""
    from pose2rgbd.placemap.format import depth_codes, depth_of_code
    from pose2rgbd.placemap.fused import tsdf

    kf, _ = ring_keyframes(3, CAM)
    limit = 4.0
    spill = tsdf._Spill(tmp_path)
    try:
        kept = tsdf._DepthCodes(len(kf), spill, limit)
        codes = [depth_codes(kf.depth(i)) for i in range(len(kf))]
        codes[1][0, :5] = 0  # invalid
        codes[1][1, :5] = 65535  # sky
        for i, c in enumerate(codes):
            kept.add(i, c)
        assert spill.size < sum(c.nbytes for c in codes)  # compressed
        for i, c in enumerate(codes):
            np.testing.assert_array_equal(kept.code(i), c)
        lut = depth_of_code()
        k = kept.in_range
        assert lut[k - 1] < limit <= lut[k]
        f = tsdf._frame(kf, 1, codes[1], kept)
        assert f is not None
        d = f.depth.as_tensor().numpy()[..., 0]  # (H, W, 1)
        want = np.where((codes[1] == 0) | (codes[1] == 65535), 0.0, lut[codes[1]]).astype(np.float32)
        np.testing.assert_array_equal(d, want)
        far = np.full_like(codes[0], k)  # every pixel at the limit or beyond it, or invalid, or sky
        far[0, 0], far[0, 1] = 0, 65535
        assert tsdf._frame(kf, 0, far, kept) is None
        far[5, 5] = k - 1  # one pixel just below it
        assert tsdf._frame(kf, 0, far, kept) is not None
    finally:
        spill.close()

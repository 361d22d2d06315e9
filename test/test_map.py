"""The place map: build, the on-disk format, lazy loading, the spatial index, the CLI; and the structure localizer
against it on a small simulated world (held-out poses recovered, another world refused)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

SIZE = 128  # the map_world fixture's image size (test/conftest.py)


@pytest.fixture(scope="module")
def world(map_world: dict) -> dict:
    return map_world


def test_map_round_trip_lazy_and_documented(world: dict) -> None:
    """The map holds exactly the selected frames (the survey; no crossing frame), their poses and intrinsics; the
    images and depth decode back (JPEG within a few grey levels, depth within the 16-bit log step); features carry
    world points that project onto their keypoints in their keyframe; nothing of a keyframe is read or decoded
    before it is asked for."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.format import DEPTH_STEP

    ds = Dataset(world["dataset"])
    pm = PlaceMap(world["map"])
    survey = np.flatnonzero(ds.frames.source_id == 0)
    assert np.array_equal(pm.frames, survey)
    assert np.allclose(pm.T_world_cam, ds.frames.T_world_cam[survey])
    assert pm.fingerprint == ds.fingerprint() and pm.world_frame == ds.manifest.world_frame
    assert pm.datum is not None and abs(pm.datum.lat_deg - ds.manifest.datum.lat_deg) < 1e-12
    # lazy: the per-keyframe arrays are memory maps, nothing decoded yet
    assert isinstance(pm._kp_desc, np.memmap) and pm.cache_stats()["cached"] == 0
    k = len(pm) // 2
    i = int(pm.frames[k])
    rgb = pm.rgb(k)
    assert rgb.shape == (SIZE, SIZE, 3) and np.mean(np.abs(rgb.astype(int) - ds.read_rgb(i))) < 2.5
    d_map, d_ds = pm.depth(k), ds.read_depth(i)
    fin = np.isfinite(d_ds)
    assert np.array_equal(np.isfinite(d_map), fin) and np.array_equal(np.isposinf(d_map), np.isposinf(d_ds))
    assert np.max(np.abs(np.log(d_map[fin] / d_ds[fin]))) <= DEPTH_STEP
    assert pm.cache_stats()["cached"] == 2
    f = pm.features(k)
    assert len(f.xy) > 50 and np.all(np.isfinite(f.xyz))
    cam = pm.camera(k)
    p_cam = (f.xyz - pm.T_world_cam[k][:3, 3]) @ pm.T_world_cam[k][:3, :3]
    uv, z = cam.project(p_cam)
    assert np.all(z > 0) and np.median(np.linalg.norm(uv - f.xy, axis=1)) < 0.75
    info = pm.info()
    assert info["keyframes"] == len(survey) and info["size_bytes"] > 0 and info["points"] == "depth"
    manifest = json.loads((world["map"] / "map.json").read_text())
    assert manifest["selection"]["sources"] == [0] and manifest["dataset"]["fingerprint"] == ds.fingerprint()
    assert set(manifest["files"]) >= {"poses.npy", "images.bin", "depth.bin", "kp_desc.npy", "global.npy"}


def test_keyframe_images_and_depth_are_read_not_mapped(world: dict, tmp_path: Path) -> None:
    """A pass over every keyframe leaves none of their bytes in the process: images.bin and depth.bin are read by
    offset, never memory-mapped (a map keeps every page it touched resident: 66 MB after one pass over 2,161
    keyframes at 160x120). A file cut after the map was opened is a clear error naming it."""
    import shutil

    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.format import MapError

    pm = PlaceMap(world["map"], cache_keyframes=0)
    for k in range(len(pm)):
        pm.rgb(k), pm.depth(k)
    mapped = Path("/proc/self/maps").read_text()
    assert "images.bin" not in mapped and "depth.bin" not in mapped
    rgb, depth = pm.encoded(1)
    off = pm._img_off
    with open(world["map"] / "images.bin", "rb") as f:
        f.seek(int(off[1]))
        assert rgb == f.read(int(off[2] - off[1]))
    assert depth is not None and len(depth) == int(pm._depth_off[2] - pm._depth_off[1])
    copy = tmp_path / "map"
    shutil.copytree(world["map"], copy)
    cut = PlaceMap(copy, cache_keyframes=0)
    with open(copy / "images.bin", "r+b") as f:
        f.truncate(int(off[-2]))  # the last keyframe's image gone
    cut.rgb(len(cut) - 2)
    with pytest.raises(MapError, match=r"images\.bin: the file ends at byte \d+, before the keyframe data"):
        cut.rgb(len(cut) - 1)


def test_map_build_is_atomic_and_refuses_bad_outputs(world: dict, tmp_path: Path) -> None:
    """An existing map is kept without --overwrite; a failed build leaves nothing behind; a folder that is not a
    map is never replaced; the dataset itself cannot be the output."""
    from pose2rgbd.output_guard import OutputError, OutputExistsError
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, build_map

    with pytest.raises(OutputExistsError, match="exists"):
        build_map(world["dataset"], world["map"], progress=False)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError):
        build_map(world["dataset"], foreign, overwrite=True, progress=False)
    assert (foreign / "mine.txt").read_text() == "keep me"
    with pytest.raises(OutputError):
        build_map(world["dataset"], world["dataset"] / "map", progress=False)
    bad = MapBuildConfig(selection=MapSelection(sources=[7]))
    with pytest.raises(Exception, match="source ids"):
        build_map(world["dataset"], tmp_path / "m2", bad, progress=False)
    assert not any(p.name.startswith(".m2") for p in tmp_path.iterdir()) and not (tmp_path / "m2").exists()


def test_depth_codes_decode_to_their_float64_exponential() -> None:
    """The decoding table gives every 16-bit code the metres of the format's formula (computed per code in float64,
    then float32), NaN for 0 and +inf for 65535; a decoded map is the caller's to change, the table is not."""
    from pose2rgbd.placemap.format import (
        DEPTH_LOG_MIN,
        DEPTH_STEP,
        decode_depth,
        depth_codes,
        depth_of_code,
        encode_depth,
    )

    code = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    ok, png = cv2.imencode(".png", code)
    assert ok
    d = decode_depth(png.tobytes())
    want = np.exp(DEPTH_LOG_MIN + (code.astype(np.float64) - 1.0) * DEPTH_STEP).astype(np.float32)
    want[0, 0], want[-1, -1] = np.nan, np.inf
    assert d.dtype == np.float32 and np.array_equal(d, want, equal_nan=True)
    d[1, 1] = 7.0  # the caller's copy
    assert depth_of_code()[257] == want[1, 1] and not depth_of_code().flags.writeable
    metres = np.array([[0.05, 1.0, 4999.0], [np.nan, np.inf, -1.0]])
    back = decode_depth(encode_depth(metres))
    assert np.allclose(back[0], metres[0], rtol=DEPTH_STEP) and np.isnan(back[1, 0]) and np.isposinf(back[1, 1])
    assert np.isnan(back[1, 2])
    # the float32 quantizer against the formula in float64: every decoded depth its own code (above), any other
    # depth the same code or its neighbour
    rng = np.random.default_rng(0)
    m = np.exp(rng.uniform(np.log(0.01), np.log(9000.0), 200_000))
    m[::97], m[1::97], m[2::97] = np.nan, np.inf, -1.0
    fin = np.isfinite(m) & (m > 0)
    want = np.zeros(m.shape, np.int64)
    want[fin] = np.clip(np.round((np.log(np.clip(m[fin], 0.05, 5000.0)) - DEPTH_LOG_MIN) / DEPTH_STEP) + 1, 1, 65534)
    want[np.isposinf(m)] = 65535
    got = depth_codes(m).astype(np.int64)
    assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 0.01
    np.testing.assert_array_equal(got[~fin], want[~fin])
    np.testing.assert_array_equal(depth_codes(depth_of_code()), np.arange(65536))


def test_pose_set_kdtree_search_is_exact() -> None:
    """Above the brute-force size the k-d tree answers exactly the brute-force nearest poses (distance: metres +
    weight x radians), including for queries far outside the references."""
    from scipy.spatial.transform import Rotation

    from pose2rgbd.geometry.coverage import BRUTE_FORCE_MAX, PoseSet

    rng = np.random.default_rng(0)
    n = BRUTE_FORCE_MAX * 4
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=1).as_matrix()
    T[:, :3, 3] = rng.uniform(-200, 200, (n, 3))
    Q = np.tile(np.eye(4), (40, 1, 1))
    Q[:, :3, :3] = Rotation.random(40, random_state=2).as_matrix()
    Q[:, :3, 3] = rng.uniform(-400, 400, (40, 3))
    for w in (0.0, 10.0, 300.0):
        ps = PoseSet(T, rot_weight_m=w)
        assert np.array_equal(ps.nearest(Q, 7), ps._nearest_brute(Q, 7, 64))


def test_k_smallest_orders_by_value_then_by_column() -> None:
    """The k smallest of each row, smallest first, ties to the lower column (also where the tie straddles the k-th
    place), +inf last: a full sort's answer on small integer rows full of ties."""
    from pose2rgbd.geometry.coverage import k_smallest

    rng = np.random.default_rng(5)
    for _ in range(300):
        m, n = int(rng.integers(1, 5)), int(rng.integers(1, 30))
        k = int(rng.integers(1, n + 1))
        d = rng.integers(0, 5, (m, n)).astype(np.float64)
        d[rng.random((m, n)) < 0.2] = np.inf
        want = np.stack([np.lexsort((np.arange(n), r))[:k] for r in d])
        assert np.array_equal(k_smallest(d, k), want)
    assert np.array_equal(k_smallest(np.array([[1.0, 0.0, 0.0, 0.0]]), 2), [[1, 2]])


def test_pose_set_brute_force_and_kdtree_break_ties_alike() -> None:
    """Keyframes at one pose (a robot standing still) tie: the brute force and the k-d tree both give the lowest
    rows, so a map's neighbours do not depend on its size."""
    from pose2rgbd.geometry.coverage import BRUTE_FORCE_MAX, PoseSet

    rng = np.random.default_rng(1)
    n = BRUTE_FORCE_MAX + 50
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, 3] = rng.uniform(-50, 50, (n, 3))
    T[100:160] = T[7]  # 61 keyframes at one pose
    ps = PoseSet(T, rot_weight_m=10.0)
    Q = T[[7, 7]].copy()
    Q[1, 0, 3] += 0.01
    for k in (1, 5, 40):
        tree, brute = ps.nearest(Q, k), ps._nearest_brute(Q, k, 64)
        assert np.array_equal(tree, brute) and list(tree[0, :3]) == [7, 100, 101][:k]


def test_pose_set_coverage_of_a_large_map_is_the_brute_force_answer_without_the_full_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A render's coverage (the nearest keyframe, metres and degrees) comes from the k-d tree for a large map, so it
    does not grow with the map: the same rows (ties, here duplicated keyframes, to the lowest row),
    distances and parts as the full distance matrix, which it never builds."""
    from scipy.spatial.transform import Rotation

    from pose2rgbd.geometry import coverage as cov

    rng = np.random.default_rng(3)
    n = cov.COVERAGE_TREE_MIN + 100
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=4).as_matrix()
    T[:, :3, 3] = rng.uniform(-100, 100, (n, 3))
    T[n // 2 :: 7] = T[n // 3]  # the same pose at several rows: a stationary camera
    Q = np.tile(np.eye(4), (30, 1, 1))
    Q[:, :3, :3] = Rotation.random(30, random_state=5).as_matrix()
    Q[:, :3, 3] = rng.uniform(-150, 150, (30, 3))
    Q[:3] = T[n // 3]  # queries at the duplicated pose itself
    Q[3, :3, 3] += 0.01
    for w in (0.0, 10.0, 300.0):
        brute = cov.PoseSet(T, rot_weight_m=w)
        monkeypatch.setattr(cov, "COVERAGE_TREE_MIN", n + 1)
        want = brute.coverage(Q)
        monkeypatch.undo()
        tree = cov.PoseSet(T, rot_weight_m=w)
        monkeypatch.setattr(cov.PoseSet, "parts", lambda *a, **k: pytest.fail("the full distance matrix was built"))
        got = tree.coverage(Q)
        monkeypatch.undo()
        assert got.index.tolist() == want.index.tolist()
        assert got.index[0] == n // 3  # the lowest of the duplicated rows
        np.testing.assert_allclose(got.distance, want.distance, rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.position_m, want.position_m, rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.angle_deg, want.angle_deg, rtol=0, atol=1e-6)


def test_map_cli_build_and_info(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pose2rgbd map build` with a split takes that split's training frames only; `map info` summarizes."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.training.splits import make_split

    out = tmp_path / "m"
    rc = main(["map", "build", "--dataset", str(world["dataset"]), "--out", str(out), "--split", "random",
               "--stride", "2", "--max-features", "300", "--no-progress"])  # fmt: skip
    assert rc == 0
    ds = Dataset(world["dataset"])
    sp = make_split(ds.frames.source_id, ds.frames.stamp_ns, "random", seed=0, val_fraction=0.1, test_fraction=0.1)
    pm = PlaceMap(out)
    assert set(pm.frames.tolist()) <= set(sp.train.tolist()) and len(pm) < len(sp.train)
    assert not set(pm.frames.tolist()) & set(sp.test.tolist())
    capsys.readouterr()
    assert main(["map", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "keyframes" in text and "per 1,000 keyframes" in text
    assert main(["map", "info", str(tmp_path)]) != 0


# ------------------------------------------------------------------------------------------ the structure localizer
def _localize_route(world: dict, dataset: Path, **over: object) -> tuple[list, np.ndarray]:
    import dataclasses

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(dataset)
    rows = np.flatnonzero(ds.frames.source_id == ds.frames.source_id.max())
    loc = StructureLocalizer(PlaceMap(world["map"]), dataclasses.replace(StructureConfig(), **over))
    fixes = [loc.localize_one(ds.read_rgb(int(i))) for i in rows]
    return fixes, ds.frames.T_world_cam[rows]


def test_structure_localizer_recovers_held_out_poses(world: dict) -> None:
    """Every frame of the held-out crossing (never in the map) is localized without any prior, as unordered
    photos: >= 90 % of the frames within 30 m of a keyframe get a fix (the sparse survey leaves gaps of 50 m,
    where "no fix" is the right answer), the median position error is below 0.5 m and orientation below 0.5 deg,
    no fix is off by more than 5 m; each fix has a positive-definite covariance with a position sigma below 2 m."""
    from pose2rgbd.evaluation.localization import pose_errors
    from pose2rgbd.placemap import PlaceMap

    fixes, T_true = _localize_route(world, world["dataset"], use_previous_fix=False)
    ok = np.array([f.ok for f in fixes])
    covered = PlaceMap(world["map"]).poses.coverage(T_true).position_m <= 30.0
    assert covered.mean() > 0.6 and ok[covered].mean() >= 0.9, [f.reason for f in fixes if not f.ok]
    pos, rot = pose_errors(np.stack([f.T_world_cam for f in fixes])[ok], T_true[ok])
    assert np.median(pos) < 0.5 and np.median(rot) < 0.5 and pos.max() < 5.0, (pos, rot)
    for f in (f for f in fixes if f.ok):
        assert np.all(np.linalg.eigvalsh(f.covariance) > 0) and np.sqrt(np.trace(f.covariance[:3, :3])) < 2.0
        assert 0.0 < f.confidence <= 1.0 and f.inliers >= 20


def test_structure_localizer_refuses_another_world(world: dict) -> None:
    """Images of another city (another simulator seed) never get a fix: "no fix" with a reason, never a
    confident wrong pose -- also as a sequence, where a wrong fix would become the next prior."""
    fixes, _ = _localize_route(world, world["other"])
    assert len(fixes) >= 10
    assert not any(f.ok for f in fixes), [(f.inliers, f.reason) for f in fixes if f.ok]
    assert all(f.reason for f in fixes) and all(np.all(np.isnan(f.T_world_cam)) for f in fixes)


def test_structure_localizer_priors(world: dict) -> None:
    """A GPS-like position prior (1.5 m noise) gives a fix from its neighbourhood's keyframes; a prior far from the
    true place finds no fix there and falls back to place recognition; the previous fix is the next prior."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import Prior, StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(world["dataset"])
    rows = np.flatnonzero(ds.frames.source_id == 1)[:6]
    loc = StructureLocalizer(PlaceMap(world["map"]))
    rng = np.random.default_rng(0)
    T = ds.frames.T_world_cam
    f = loc.localize_one(ds.read_rgb(int(rows[0])), Prior(T[rows[0]][:3, 3] + rng.normal(0, 1.5, 3), source="gps"))
    assert f.ok and f.prior == "gps" and np.linalg.norm(f.T_world_cam[:3, 3] - T[rows[0]][:3, 3]) < 1.0
    f2 = loc.localize_one(ds.read_rgb(int(rows[1])))
    assert f2.ok and f2.prior == "sequence"
    loc.reset()
    far = Prior(T[rows[2]][:3, 3] + np.array([400.0, 400.0, 0.0]), radius_m=20.0, source="gps")
    f3 = loc.localize_one(ds.read_rgb(int(rows[2])), far)
    assert f3.prior == "" and (not f3.ok or np.linalg.norm(f3.T_world_cam[:3, 3] - T[rows[2]][:3, 3]) < 1.0)
    # a loose prior (a learned model's guess: 120 m off, searched within 150 m) never wins over what the image shows
    loc = StructureLocalizer(PlaceMap(world["map"]), StructureConfig(use_previous_fix=False))
    for i in np.flatnonzero(ds.frames.source_id == 1)[::3]:
        guess = Prior(T[i][:3, 3] + np.array([120.0, 0.0, 0.0]), radius_m=150.0, source="posegan")
        f = loc.localize_one(ds.read_rgb(int(i)), guess)
        assert not f.ok or np.linalg.norm(f.T_world_cam[:3, 3] - T[i][:3, 3]) < 2.0, (i, f.inliers, f.prior)


def test_information_covariance_matches_the_spread_of_noisy_solutions() -> None:
    """The covariance from the inliers' information predicts the spread of poses solved from noisy observations
    of the same points (Monte Carlo): position variances within a factor of two."""
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.inference.structure import information_covariance

    cam = PinholeCamera.from_fov(256, 256, 75.0)
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(-20, 20, (150, 2)), rng.uniform(30, 60, 150)]  # camera at the origin looking along +z
    T = np.eye(4)
    uv, _ = cam.project(X)
    cov = information_covariance(T, X, uv + rng.normal(0, 1.0, uv.shape), cam.K, min_sigma_px=0.5)
    import cv2

    sols = []
    for _ in range(200):
        obs = uv + rng.normal(0, 1.0, uv.shape)
        _, rvec, tvec = cv2.solvePnP(X, obs, cam.K, None, np.zeros(3), np.zeros(3), useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)  # fmt: skip
        R, _ = cv2.Rodrigues(rvec)
        sols.append(-R.T @ tvec.reshape(3))  # camera centre
    emp = np.var(np.asarray(sols), axis=0)
    ratio = np.diag(cov)[:3] / emp
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


# ------------------------------------------------------------------------------------- served: node, CLI, calibrate
def _query_rows(world: dict, n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    from pose2rgbd.dataset import Dataset

    ds = Dataset(world["dataset"])
    rows = np.flatnonzero(ds.frames.source_id == 1)[:n]
    return rows, ds.frames.T_world_cam[rows], [ds.read_rgb(int(i)) for i in rows]


def test_localize_node_offline_with_a_map(
    world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`pose2rgbd localize bag --map` (the offline localize node, structure method, no checkpoint): a pose per
    image near the truth with its own covariance and inlier count in the status; an image of another world
    publishes no pose, only a status saying why. Each image's CameraInfo, logged at its instant after it (as the
    simulator's bags hold them), is the camera of that image: no "image before any CameraInfo" warning."""
    from pose2rgbd.bags import open_bag
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.geometry.transforms import T_from_tq
    from pose2rgbd.testing.flight_bag import write_image_bag

    _, T_true, imgs = _query_rows(world, 5)
    other = Dataset(world["other"]).read_rgb(3)
    # the images' CameraInfo beside them: taken as the query camera without --camera-info-topic
    stamps = write_image_bag(tmp_path / "in", [*imgs, other], camera=Dataset(world["dataset"]).camera)
    out = tmp_path / "out"
    assert main(["localize", "bag", "--bag", str(tmp_path / "in"), "--out", str(out), "--map", str(world["map"]),
                 "--namespace", "loc"]) == 0  # fmt: skip
    assert "query camera: the CameraInfo on /camera/camera_info" in capsys.readouterr().out
    assert "before any CameraInfo" not in caplog.text, caplog.text
    poses, status = {}, {}
    with open_bag(out) as r:
        for m in r.messages(["/loc/pose", "/loc/localization_status"]):
            stamp = m.msg.header.stamp.sec * 10**9 + m.msg.header.stamp.nanosec
            if m.topic == "/loc/pose":
                p = m.msg.pose.pose
                T = T_from_tq([p.position.x, p.position.y, p.position.z],
                              [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])  # fmt: skip
                poses[stamp] = (T, np.asarray(m.msg.pose.covariance).reshape(6, 6))
            elif m.topic == "/loc/localization_status":
                status[stamp] = {kv.key: kv.value for kv in m.msg.status[0].values} | {"msg": m.msg.status[0].message}
    assert set(poses) == {int(s) for s in stamps[:5]} and set(status) == {int(s) for s in stamps}
    for s, T in zip(stamps[:5], T_true):
        est, cov = poses[int(s)]
        assert np.linalg.norm(est[:3, 3] - T[:3, 3]) < 1.0 and np.all(np.linalg.eigvalsh(cov) > 0)
        assert status[int(s)]["fix"] == "true" and int(status[int(s)]["inliers"]) >= 20
    last = status[int(stamps[5])]
    assert last["fix"] == "false" and last["reason"] and last["msg"].startswith("no fix")


def test_cli_localize_images_with_a_map(world: dict, tmp_path: Path) -> None:
    """`pose2rgbd localize images DIR --map M`: one row per image in name order; a foreign image and an unreadable
    file keep their rows with empty pose fields and the reason; TUM output writes them as comment lines."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset

    _, T_true, imgs = _query_rows(world, 4)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, img in enumerate(imgs):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), img[..., ::-1])
    cv2.imwrite(str(folder / "f02b.png"), Dataset(world["other"]).read_rgb(3)[..., ::-1])
    (folder / "f03b.png").write_bytes(b"not a png")
    out = tmp_path / "poses.csv"
    assert main(["localize", "images", str(folder), "--map", str(world["map"]), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0].startswith("image,tx,ty,tz,qx,qy,qz,qw,confidence,out_of_distribution,fix,reason,inliers,")
    by = {ln.split(",")[0]: ln.split(",") for ln in lines[1:]}
    assert list(by) == ["f00.png", "f01.png", "f02.png", "f02b.png", "f03.png", "f03b.png"]
    for k, T in enumerate(T_true):
        v = by[f"f{k:02d}.png"]
        assert v[10] == "true" and np.linalg.norm(np.array(v[1:4], float) - T[:3, 3]) < 1.0
    for name in ("f02b.png", "f03b.png"):
        assert by[name][10] == "false" and by[name][11] and all(x == "" for x in by[name][1:9])
    tum = tmp_path / "poses.tum"
    assert main(["localize", "images", str(folder), "--map", str(world["map"]), "--out", str(tum), "--no-sequence",
                 "--no-progress"]) == 0  # fmt: skip
    text = tum.read_text().splitlines()
    assert len([ln for ln in text if not ln.startswith("#")]) == 4 and sum("no fix" in ln for ln in text) == 2
    assert main(["localize", "images", str(folder), "--method", "posegan", "--out", str(tmp_path / "x.csv")]) == 2


def test_localize_calibrate_with_a_map(world: dict, tmp_path: Path) -> None:
    """`pose2rgbd localize calibrate --map M --dataset D` calibrates on frames outside the map only: the
    information covariance's scale factor; a map whose keyframes are the frames asked for is refused."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.evaluation.calibration import load_calibration

    out = tmp_path / "cal.yaml"
    assert main(["localize", "calibrate", "--map", str(world["map"]), "--dataset", str(world["dataset"]),
                 "--out", str(out), "--max-frames", "30"]) == 0  # fmt: skip
    cal = load_calibration(out)
    assert cal.information_scale > 0 and cal.n_frames >= 12 and cal.source["map"] == str(world["map"])
    assert cal.errors["position_median_m"] < 1.0
    fix_cov = np.diag([0.01, 0.01, 0.04, 1e-6, 1e-6, 1e-6])
    scale = np.array([cal.information_scale_position] * 3 + [cal.information_scale_orientation] * 3)
    assert np.all(scale > 0) and np.allclose(cal.covariance_of_fix(fix_cov), fix_cov * scale)  # per block


def test_the_map_knows_its_selection_and_calibration_takes_its_split(world: dict) -> None:
    """One selection: the map reads back the selection it was built with, and the split `localize calibrate --map`
    calibrates on is the map's own (its seed and fractions, not defaults), the one `map build` took its keyframes
    from."""
    import dataclasses

    from pose2rgbd import config as cfgmod
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.splits import make_split
    from pose2rgbd.placemap import MapSelection, PlaceMap, select_frames
    from pose2rgbd.placemap.selection import selection_split

    assert PlaceMap(world["map"]).selection == MapSelection(sources=[0])
    sel = MapSelection(split="every-nth", seed=3, val_fraction=0.2, test_fraction=0.05, every_nth=4)
    entry = {**cfgmod.to_dict(sel), "description": sel.describe(), "keyframes": 12}  # as map build writes it
    assert MapSelection.from_manifest(entry) == sel
    ds = Dataset(world["dataset"])
    f = ds.frames
    for kind in ("every-nth", "random"):
        sp = make_split(f.source_id, f.stamp_ns, kind, seed=3, val_fraction=0.2, test_fraction=0.05, every_nth=4)
        got = selection_split(ds, dataclasses.replace(sel, split=kind))
        np.testing.assert_array_equal(got.val, sp.val)
        np.testing.assert_array_equal(got.train, sp.train)
    np.testing.assert_array_equal(select_frames(ds, sel), selection_split(ds, sel).train)


def test_experiments_structure_rows_and_refusal(world: dict, tmp_path: Path) -> None:
    """The localization experiments' structure rows: a map of the split's training frames, each mode scored on the
    test frames (fix rate, errors, wrong fixes); a prebuilt map that holds test frames is refused."""
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.experiments.localization import LocalizationExperimentsConfig
    from pose2rgbd.experiments.structure_localization import run_structure, structure_markdown
    from pose2rgbd.placemap import PlaceMap

    cfg = LocalizationExperimentsConfig(dataset=str(world["dataset"]), structure_map=str(world["map"]))
    with pytest.raises(ConfigError, match="test frames"):
        run_structure(cfg, "route", 0, PlaceMap(world["map"]).frames[:3], None, tmp_path, progress=False)
    cfg = LocalizationExperimentsConfig(dataset=str(world["dataset"]), sparse_every=0, grayscale=False)
    test, _, _ = _query_rows(world, 4)
    res = run_structure(cfg, "route", 0, test, None, tmp_path, progress=False)
    names = [r["name"] for r in res["rows"]]
    assert names == ["structure, no prior", "structure, sequence", "structure, GPS prior"]
    assert all(r["frames"] == 4 and r["fix_rate"] >= 0.75 and r["wrong_fixes"] == 0 for r in res["rows"])
    assert not np.isin(PlaceMap(tmp_path / "runs" / "route" / "structure-s0" / "map").frames, test).any()
    pr = res["place_recognition"]
    assert set(pr) >= {"vlad", "thumbnail", "reachable"} and 0.0 <= pr["vlad"]["20"] <= 1.0
    assert pr["vlad"]["1"] <= pr["vlad"]["5"] <= pr["vlad"]["20"]
    md = structure_markdown([res])
    assert "| structure, GPS prior | 4 |" in md and "recall@5" in md


def _without_depth(src: Path, out: Path) -> Path:
    """A copy of dataset ``src`` with no depth (an RGB-only dataset: a video, posed photos); images linked."""
    import csv

    import yaml

    out.mkdir()
    man = yaml.safe_load((src / "manifest.yaml").read_text())
    man["depth"] = {"kind": "none", "encoding": "npy-float32", "units": "none"}
    (out / "manifest.yaml").write_text(yaml.safe_dump(man))
    rows = list(csv.reader((src / "frames.csv").read_text().splitlines()))
    for r in rows[1:]:
        r[-1] = ""
    with open(out / "frames.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (out / "rgb").symlink_to(src / "rgb")
    return out


def test_map_of_an_rgb_only_dataset_triangulates_and_localizes(world: dict, tmp_path: Path) -> None:
    """Without depth the keypoints' world points are triangulated across neighbouring keyframes with the known
    poses: they land near the true surface (the depth of the same dataset; median within 10 % of the depth at
    128x128 and about 10 m baselines), the map holds no depth, and held-out frames still localize to under a
    metre."""
    from pose2rgbd.evaluation.localization import pose_errors
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, PlaceMap, build_map

    ds = _without_depth(world["dataset"], tmp_path / "rgb_only")
    build_map(ds, tmp_path / "m", MapBuildConfig(selection=MapSelection(sources=[0])), progress=False)
    pm, ref = PlaceMap(tmp_path / "m"), PlaceMap(world["map"])
    assert not pm.has_depth and pm.manifest["points"] == "triangulated"
    with pytest.raises(Exception, match="no depth"):
        pm.depth(0)
    good, total = 0, 0
    for k in range(0, len(pm), 10):
        f = pm.features(k)
        ok = np.all(np.isfinite(f.xyz), axis=1)
        total += len(f.xyz)
        good += int(ok.sum())
        d = ref.depth(k)  # the true depth of the same keyframe: the points must lie on it
        cam = pm.camera(k)
        T = pm.T_world_cam[k]
        p = (f.xyz[ok] - T[:3, 3]) @ T[:3, :3]
        u = np.clip(np.round(f.xy[ok, 0]).astype(int), 0, cam.width - 1)
        v = np.clip(np.round(f.xy[ok, 1]).astype(int), 0, cam.height - 1)
        z_true = d[v, u]
        fin = np.isfinite(z_true)
        assert np.median(np.abs(p[fin, 2] - z_true[fin]) / z_true[fin]) < 0.1
    assert good > 0.3 * total
    fixes, T_true = _localize_route({**world, "map": tmp_path / "m"}, world["dataset"], use_previous_fix=False)
    ok = np.array([f.ok for f in fixes])
    assert ok.mean() > 0.4
    pos, _ = pose_errors(np.stack([f.T_world_cam for f in fixes])[ok], T_true[ok])
    assert np.median(pos) < 1.0 and pos.max() < 5.0


def test_localization_only_map_is_smaller_and_localizes(world: dict, tmp_path: Path) -> None:
    """`map build --localization-only`: no keyframe images or depth (asking for them is a clear error), much
    smaller, and the localizer answers as with the full map."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.placemap import MapError, PlaceMap

    out = tmp_path / "lo"
    assert main(["map", "build", "--dataset", str(world["dataset"]), "--out", str(out), "--sources", "0",
                 "--localization-only", "--no-progress"]) == 0  # fmt: skip
    pm = PlaceMap(out)
    assert not pm.has_depth and pm.info()["size_bytes"] < 0.7 * PlaceMap(world["map"]).info()["size_bytes"]
    with pytest.raises(MapError, match="no keyframe images"):
        pm.rgb(0)
    fixes, _ = _localize_route({**world, "map": out}, world["dataset"], use_previous_fix=False)
    full, _ = _localize_route(world, world["dataset"], use_previous_fix=False)
    ok = np.array([f.ok for f in full])
    assert ok.mean() > 0.6  # the comparison below means something only where the full map fixes the route
    assert [f.ok for f in fixes] == ok.tolist()
    for a, b in zip((f for f in fixes if f.ok), (f for f in full if f.ok)):
        assert np.allclose(a.T_world_cam, b.T_world_cam, atol=1e-6)  # the same fix, not merely a fix


def test_query_of_another_aspect_ratio_needs_its_intrinsics(world: dict) -> None:
    """An image of another aspect ratio than the map's camera cannot borrow its intrinsics (scaling would stretch
    them): a clear error naming what to give; with the image's own intrinsics it localizes."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(world["dataset"])
    i = int(np.flatnonzero(ds.frames.source_id == 1)[2])
    img = ds.read_rgb(i)[16:112]  # 128x96: a crop, the principal point moves up by 16 rows
    pm = PlaceMap(world["map"])
    loc = StructureLocalizer(pm, StructureConfig(use_previous_fix=False))
    with pytest.raises(ConfigError, match="aspect ratio"):
        loc.localize_one(img)
    cam = pm.camera(0)
    loc.query_intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy - 16)
    f = loc.localize_one(img)
    assert f.ok and np.linalg.norm(f.T_world_cam[:3, 3] - ds.frames.T_world_cam[i][:3, 3]) < 1.0


def test_map_summary_counts_units_and_ordinals(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`map build` / `map info` say what the map holds: how many features per keyframe and how many of them have
    a world point (all, lifted from depth; a share, triangulated), the extent in the poses' own units (metres, or
    "not metres" for unscaled poses) and "every 2nd", not "every 2th"."""
    import re

    import yaml

    from pose2rgbd.cli.main import main
    from pose2rgbd.placemap import PlaceMap

    ds = _without_depth(world["dataset"], tmp_path / "sfm")
    man = yaml.safe_load((ds / "manifest.yaml").read_text())
    man["pose_units"] = "unscaled"  # as a structure-from-motion import writes it
    (ds / "manifest.yaml").write_text(yaml.safe_dump(man))
    out = tmp_path / "m"
    capsys.readouterr()
    assert main(["map", "build", "--dataset", str(ds), "--out", str(out), "--sources", "0", "--stride", "2",
                 "--max-features", "300", "--no-progress"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    pm = PlaceMap(out)
    total = int(pm._kp_offsets[-1])
    with_point = sum(int(np.all(np.isfinite(pm.features(k).xyz), axis=1).sum()) for k in range(len(pm)))
    assert 0 < with_point < total
    assert "every 2nd" in text and "every 2th" not in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("features"))
    assert f"{total} SIFT ({total / len(pm):.0f} per keyframe); {with_point} (" in line
    assert f"{100 * with_point / total:.1f} %" in line and "triangulated" in line
    ext = next(ln for ln in text.splitlines() if ln.strip().startswith("extent"))
    assert "(m)" not in ext and "not metres" in ext
    # a map lifted from metric depth: every stored feature has its point; metres
    assert main(["map", "info", str(world["map"])]) == 0
    text = capsys.readouterr().out
    ref = PlaceMap(world["map"])
    n = int(ref._kp_offsets[-1])
    assert (
        re.search(rf"features +{n} SIFT \(\d+ per keyframe\); {n} \(100\.0 %", text) and "lifted from the depth" in text
    )
    assert "extent (m)" in text


def test_a_dataset_appended_to_since_its_map_was_built_is_called_changed_not_another(
    world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A map whose dataset was appended to afterwards (a recording resumed into it) was refused as "built from
    another dataset" by `localize calibrate`, and `map info` said nothing. The same folder, grown: the error and
    `map info` (with or without --verify) say the dataset has changed since the build, with its frames then and now,
    and give the command that builds the map again (--overwrite). Another folder stays "another dataset"."""
    import shutil

    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset, DatasetWriter
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.format import MapError

    ds_path, m = tmp_path / "ds", tmp_path / "map"
    shutil.copytree(world["dataset"], ds_path)
    shutil.copytree(world["map"], m)
    manifest = json.loads((m / "map.json").read_text())
    manifest["dataset"]["path"] = str(ds_path.resolve())  # the map of this copy (the fingerprint is the content's)
    (m / "map.json").write_text(json.dumps(manifest))
    ds = Dataset(ds_path)
    n = len(ds)
    PlaceMap(m).check_dataset(ds.fingerprint(), str(ds_path), path=ds_path, frames=n)  # unchanged: passes
    assert main(["map", "info", str(m)]) == 0 and "dataset now" not in capsys.readouterr().out
    w = DatasetWriter(ds_path, ds.manifest, mode="append")
    for i in (n - 2, n - 1):  # two frames appended, as a resumed recording appends them
        f = ds.frames
        w.add_frame(int(f.stamp_ns[i]) + 10**9, f.T_world_cam[i], ds.read_rgb(i), ds.read_depth(i),
                    latlonalt=tuple(f.latlonalt[i]), source_id=int(f.source_id[i]))  # fmt: skip
    w.close()
    grown = Dataset(ds_path)
    assert len(grown) == n + 2
    with pytest.raises(MapError) as e:
        PlaceMap(m).check_dataset(grown.fingerprint(), str(ds_path), path=ds_path, frames=len(grown))
    msg = str(e.value)
    assert "another dataset" not in msg and f"{ds_path}: the dataset has changed since {m} was built from it" in msg
    assert f"{n} frames when the map was built, {n + 2} now: 2 frames added since" in msg, msg
    assert f"`pose2rgbd map build --dataset {ds_path.resolve()} --out {m} --overwrite`" in msg, msg
    rc = main(["localize", "calibrate", "--map", str(m), "--dataset", str(ds_path), "--out", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and "the dataset has changed since" in err and "--overwrite" in err, err
    for verify in ([], ["--verify"]):
        assert main(["map", "info", str(m), *verify]) == 0
        out = capsys.readouterr().out
        assert f"  dataset now  the dataset has changed since {m} was built from it ({n} frames when" in out, out
    assert main(["map", "info", str(m), "--json"]) == 0
    now = json.loads(capsys.readouterr().out)["dataset_now"]
    assert now["status"] == "changed" and (now["frames_then"], now["frames_now"]) == (n, n + 2), now
    # the grown dataset copied elsewhere is another dataset for this map
    shutil.copytree(ds_path, tmp_path / "copy")
    with pytest.raises(MapError, match="was built from another dataset"):
        PlaceMap(m).check_dataset(grown.fingerprint(), "copy", path=tmp_path / "copy", frames=len(grown))

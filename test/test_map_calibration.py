"""Honest uncertainty by default: ``map build`` calibrates the structure localizer on the map's own held-out
keyframes (covariance scale, out-of-distribution gate, confidence as a probability) and stores it in the map; the
localizer, ``localize images`` and the node use it unless a file overrides it. Plus the query-size rules of
``localize images`` (odd-sized images, queries larger than the map)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main


@pytest.fixture(scope="module")
def cal_world(map_world: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A map of the survey built by `pose2rgbd map build` (which calibrates itself), and one of every second survey
    frame whose other frames are held-out queries of the same kind."""
    d = tmp_path_factory.mktemp("calmap")
    assert main(["map", "build", "--dataset", str(map_world["dataset"]), "--out", str(d / "map"), "--sources", "0",
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["map", "build", "--dataset", str(map_world["dataset"]), "--out", str(d / "half"), "--sources", "0",
                 "--stride", "2", "--no-progress"]) == 0  # fmt: skip
    return {**map_world, "cal_map": d / "map", "half": d / "half"}


def _route(world: dict, map_path: Path, rows: np.ndarray, **over: object) -> tuple[list, np.ndarray]:
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(world["dataset"])
    loc = StructureLocalizer(PlaceMap(map_path), dataclasses.replace(StructureConfig(), use_previous_fix=False, **over))
    assert loc.calibration_source == "map"
    return [loc.localize_one(ds.read_rgb(int(i))) for i in rows], ds.frames.T_world_cam[rows]


def _crossing(world: dict) -> np.ndarray:
    from pose2rgbd.dataset import Dataset

    return np.flatnonzero(Dataset(world["dataset"]).frames.source_id == 1)


def test_map_build_stores_its_calibration_and_the_default_covariance_is_calibrated(cal_world: dict) -> None:
    """The map's manifest holds the calibration fitted on its held-out keyframes (a tenth of them, at least 12
    fixes); on the crossing route (never in the map, never in the calibration) the covariance the localizer
    publishes by default is within 0.5-2x of the errors (median squared Mahalanobis error over chi-square's median,
    variance scale), as a whole and per block."""
    from pose2rgbd.inference.structure_calibration import published_factors

    entry = json.loads((cal_world["cal_map"] / "map.json").read_text())["calibration"]
    assert entry["status"] == "calibrated" and entry["fixes"] >= 12 and 0.05 <= entry["share"] <= 0.3, entry
    cal = entry["calibration"]
    assert cal["information_scale_position"] > 0 and cal["gate"]["max_position_ratio"] > 0
    assert cal["confidence_model"]["bound_m"] > 0
    bound = cal["information_scale_bound"]  # the scale is the median's upper 80 % bound over the held-out fixes
    assert bound["level"] == 0.8 and bound["n"] == entry["fixes"] and bound["coverage"] >= 0.8
    assert cal["information_scale_position"] >= bound["median_position"]
    fixes, T_true = _route(cal_world, cal_world["cal_map"], _crossing(cal_world))
    inside = np.array([f.ok and not f.flag for f in fixes])
    assert inside.sum() >= 15, [(f.reason, f.flag) for f in fixes]
    fac = published_factors([f for f, k in zip(fixes, inside) if k], T_true[inside])
    for k in ("factor", "factor_position", "factor_orientation"):
        assert 0.5 <= fac[k] <= 2.0, fac


def test_a_fix_beyond_the_maps_coverage_is_flagged_or_refused(cal_world: dict) -> None:
    """Crossing-route fixes farther from the survey's keyframes than the calibration ever saw are flagged with the
    reason, their covariance inflated (x ood_covariance_scale) and their confidence low; none of them is published
    unflagged. With ood_policy refuse they are "no fix" with reason "out of distribution"."""
    from pose2rgbd.inference.calibration import Calibration
    from pose2rgbd.placemap import PlaceMap

    cal = Calibration.from_dict(json.loads((cal_world["cal_map"] / "map.json").read_text())["calibration"]
                                ["calibration"])  # fmt: skip
    rows = _crossing(cal_world)
    fixes, _ = _route(cal_world, cal_world["cal_map"], rows)
    ok = [f for f in fixes if f.ok]
    gate = cal.gate
    far = [f for f in ok if f.position_ratio > gate["max_position_ratio"] or f.pose_ratio > gate["max_pose_ratio"]]
    assert len(far) >= 3, [(round(f.position_ratio, 2), round(f.pose_ratio, 2)) for f in ok]
    cov = PlaceMap(cal_world["cal_map"]).poses.coverage(np.stack([f.T_world_cam for f in far]))
    assert np.all(cov.position_m / gate["spacing_position_m"] > 1.0)  # truly away from the keyframes
    for f in far:
        assert f.flag.startswith("beyond the map's coverage"), f.flag
        assert np.allclose(f.covariance, cal.covariance_of_fix(f.information) * 100.0)
        assert f.confidence < 0.5
    refused, _ = _route(cal_world, cal_world["cal_map"], rows, ood_policy="refuse")
    assert all(not f.ok or not f.flag for f in refused)
    assert sum(f.reason == "out of distribution" for f in refused) == sum(bool(f.flag) for f in ok)


def test_confidence_is_the_probability_of_the_stated_bound_on_held_out_frames(cal_world: dict) -> None:
    """Confidence = P(position error < bound_m): on survey frames outside the half map (never keyframes, never
    held out by its calibration) the share of fixes within the bound matches the mean confidence, over all fixes
    and in the lower and upper halves by confidence (tolerances for about 150 fixes)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.geometry.transforms import pose_errors
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(cal_world["dataset"])
    survey = np.flatnonzero(ds.frames.source_id == 0)
    rows = np.setdiff1d(survey, PlaceMap(cal_world["half"]).frames)[::2]
    fixes, T_true = _route(cal_world, cal_world["half"], rows)
    ok = np.array([f.ok for f in fixes])
    assert ok.mean() > 0.8
    good = [f for f in fixes if f.ok]
    bound = good[0].confidence_bound_m
    assert bound > 0 and all(f.confidence_bound_m == bound for f in good)
    err, _ = pose_errors(np.stack([f.T_world_cam for f in good]), T_true[ok])
    conf = np.array([f.confidence for f in good])
    within = err < bound
    assert abs(conf.mean() - within.mean()) < 0.1, (conf.mean(), within.mean())
    order = np.argsort(conf)
    for half in np.array_split(order, 2):
        assert abs(conf[half].mean() - within[half].mean()) < 0.2, (conf[half].mean(), within[half].mean())


def test_localize_images_csv_covariance_flag_odd_sizes_and_summary(
    cal_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`localize images --map` with the map's own calibration: each fixed row has confidence_bound_m, the six
    standard deviations (sqrt of the published covariance's diagonal: x y z, rotations about the world axes in
    degrees) and the flag; an image of another aspect ratio is a row naming it and why, and the folder goes on; the
    summary counts the rows without a fix per reason and gives p50 / p99 time per image."""
    from pose2rgbd.cli.localize import CSV_STRUCTURE
    from pose2rgbd.dataset import Dataset

    ds = Dataset(cal_world["dataset"])
    rows = _crossing(cal_world)[:6]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(rows):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    cv2.imwrite(str(folder / "f02b.png"), np.zeros((40, 120, 3), np.uint8) + 90)  # another aspect ratio
    out = tmp_path / "poses.csv"
    capsys.readouterr()
    assert main(["localize", "images", str(folder), "--map", str(cal_world["cal_map"]), "--out", str(out),
                 "--no-sequence", "--no-progress"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    import csv

    table = list(csv.DictReader(out.read_text().splitlines()))
    assert ",".join(table[0].keys()) == CSV_STRUCTURE
    by = {r["image"]: r for r in table}
    assert len(by) == 7 and by["f02b.png"]["fix"] == "false" and "f02b.png" in by["f02b.png"]["reason"]
    assert "aspect ratio" in by["f02b.png"]["reason"]
    fixed = [r for r in table if r["fix"] == "true"]
    assert fixed
    for r in fixed:
        sig = [float(r[k]) for k in ("sigma_x_m", "sigma_y_m", "sigma_z_m", "sigma_rx_deg", "sigma_ry_deg",
                                     "sigma_rz_deg")]  # fmt: skip
        assert all(v > 0 for v in sig) and float(r["confidence_bound_m"]) > 0
        assert r["out_of_distribution"] == str(bool(r["flag"])).lower()
    assert "time per image: p50" in text and "p99" in text
    assert "images without a fix:" in text and "image not usable" in text
    assert re.search(r"confidence: P\(position error < [0-9.e+-]+ m\)", text), text  # a metric map: metres


def test_a_query_larger_than_the_map_is_matched_at_the_maps_resolution(cal_world: dict, monkeypatch) -> None:
    """A query of 4x the map's size is scaled down to the map's pixel count before SIFT (intrinsics with it): the
    features are extracted at 128x128 and the pose is as good as from the original image."""
    import pose2rgbd.inference.structure as structure
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(cal_world["dataset"])
    i = int(_crossing(cal_world)[3])
    big = cv2.resize(ds.read_rgb(i), (512, 512), interpolation=cv2.INTER_CUBIC)
    seen: list[tuple[int, ...]] = []
    real = structure.extract
    monkeypatch.setattr(structure, "extract", lambda img, *a, **k: (seen.append(img.shape), real(img, *a, **k))[1])
    loc = StructureLocalizer(PlaceMap(cal_world["cal_map"]), dataclasses.replace(StructureConfig(),
                                                                                 use_previous_fix=False))  # fmt: skip
    fix = loc.localize_one(big)
    assert seen[-1][:2] == (128, 128) and fix.scale == pytest.approx(0.25)
    assert fix.ok and np.linalg.norm(fix.T_world_cam[:3, 3] - ds.frames.T_world_cam[i][:3, 3]) < 1.0


def test_localize_calibrate_reports_the_default_factor(cal_world: dict, tmp_path: Path, capsys) -> None:
    """`localize calibrate --map` on a self-calibrated map says how the default covariance compares with the
    errors of frames outside the map (the factor the issue's target is stated in)."""
    capsys.readouterr()
    assert main(["localize", "calibrate", "--map", str(cal_world["cal_map"]), "--dataset", str(cal_world["dataset"]),
                 "--split", "all", "--out", str(tmp_path / "cal.yaml"), "--max-frames", "40"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "the map's own calibration on these frames: covariance factor" in text
    factor = float(re.search(r"covariance factor ([0-9.e+-]+)", text).group(1))  # type: ignore[union-attr]
    assert ("not honest on these frames" in text) == (not 0.5 <= factor <= 2.0), text


def test_localize_calibrate_warns_where_the_maps_own_covariance_is_not_honest() -> None:
    """The warnings `localize calibrate --map` prints under its measurement: a covariance factor outside 0.5-2 (with
    what to check first: the dataset's poses it scores against), a confidence far from the share within its bound;
    none where it is honest."""
    from pose2rgbd.cli.localize import honesty_warnings

    narrow = honesty_warnings({"factor": 5.65, "mean_confidence": 0.5, "share_within_bound": 0.08})
    assert len(narrow) == 2 and "2.4 times too narrow" in narrow[0] and "the dataset's poses" in narrow[0]
    assert "optimistic" in narrow[1] and "0.50 against 0.08" in narrow[1]
    wide = honesty_warnings({"factor": 0.12, "mean_confidence": 0.3, "share_within_bound": 0.9})
    assert "2.9 times too wide" in wide[0] and "pessimistic" in wide[1]
    assert honesty_warnings({"factor": 1.0, "mean_confidence": 0.86, "share_within_bound": 0.82}) == []
    assert honesty_warnings({}) == []


def test_a_sequence_fix_the_calibration_flags_is_solved_again_without_the_previous_fix(cal_world: dict) -> None:
    """Photos seconds apart on a map of a video: the previous fix's nearest keyframes need not reach the next image,
    and a fix from them can be decisive in inliers yet wrong (a real GoPro walk: 46 inliers, 0.57 m off, flagged
    'weak geometry', where place recognition gave 389 inliers and the keyframe's own pose). A sequence fix the map's
    calibration flags is solved again without the previous fix; an unflagged answer replaces it. Here the sequence's
    candidates are made to give a pose 200 m above the route (flagged beyond the map's coverage)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    pm = PlaceMap(cal_world["cal_map"])
    ds = Dataset(cal_world["dataset"])
    rows = np.flatnonzero(ds.frames.source_id == 1)
    loc = StructureLocalizer(pm, StructureConfig())
    assert loc.calibration_source == "map"
    real_solve = loc._solve

    def solve(img, feats, cam, wh, priors):  # type: ignore[no-untyped-def]
        f = real_solve(img, feats, cam, wh, [p for p in priors if p.source != "sequence"])
        if f.ok and priors and priors[0].source == "sequence":
            f.T_world_cam = f.T_world_cam.copy()
            f.T_world_cam[2, 3] += 200.0
            f.prior = "sequence"
        return f

    loc._solve = solve  # type: ignore[method-assign]
    first = loc.localize_one(ds.read_rgb(int(rows[0])))
    assert first.ok and not first.flag and loc.stats["sequence_retries"] == 0
    T_true = ds.frames.T_world_cam[int(rows[1])]
    second = loc.localize_one(ds.read_rgb(int(rows[1])))
    assert loc.stats["sequence_retries"] == 1
    assert second.ok and not second.flag and second.prior == "", (second.flag, second.prior)
    assert np.linalg.norm(second.T_world_cam[:3, 3] - T_true[:3, 3]) < 1.0
    # the sequence fix without a flag is the answer (no second solve)
    loc._solve = real_solve  # type: ignore[method-assign]
    third = loc.localize_one(ds.read_rgb(int(rows[2])))
    assert third.ok and third.prior == "sequence" and not third.flag and loc.stats["sequence_retries"] == 1


def test_a_sequence_fix_of_low_confidence_is_solved_again_and_the_better_kept(cal_world: dict) -> None:
    """A sequence fix that is not flagged but whose confidence is low (a GoPro clip's frames 1.4 m apart: 87 inliers,
    0.75 m off at a 5 cm sigma, confidence 0.15) is solved again without the previous fix; the answer of higher
    confidence replaces it. Here the sequence's fix keeps 8 of its inliers' support (its covariance wide, its
    confidence low) and is moved 0.3 m."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    pm = PlaceMap(cal_world["cal_map"])
    ds = Dataset(cal_world["dataset"])
    rows = np.flatnonzero(ds.frames.source_id == 1)
    real_solve = StructureLocalizer(pm, StructureConfig())._solve

    def make(retry_below: float) -> StructureLocalizer:
        loc = StructureLocalizer(pm, dataclasses.replace(StructureConfig(), sequence_retry_confidence=retry_below))

        def solve(img, feats, cam, wh, priors):  # type: ignore[no-untyped-def]
            f = real_solve(img, feats, cam, wh, [p for p in priors if p.source != "sequence"])
            if f.ok and priors and priors[0].source == "sequence" and f.support is not None:
                f.T_world_cam = f.T_world_cam.copy()
                f.T_world_cam[0, 3] += 0.3
                f.support = (f.support[0][:8], f.support[1][:8])
                f.prior = "sequence"
            return f

        loc._solve = solve  # type: ignore[method-assign]
        return loc

    T_true = ds.frames.T_world_cam[int(rows[1])]
    off = make(0.0)  # no retry for confidence: the low-confidence sequence fix is the answer
    off.localize_one(ds.read_rgb(int(rows[0])))
    kept = off.localize_one(ds.read_rgb(int(rows[1])))
    assert kept.ok and kept.prior == "sequence" and not kept.flag, (kept.prior, kept.flag)
    assert kept.confidence < 0.5 and off.stats["sequence_retries"] == 0
    on = make(0.5)  # the default
    on.localize_one(ds.read_rgb(int(rows[0])))
    second = on.localize_one(ds.read_rgb(int(rows[1])))
    assert on.stats["sequence_retries"] == 1
    assert second.ok and second.prior == "" and not second.flag and second.confidence > kept.confidence
    assert np.linalg.norm(second.T_world_cam[:3, 3] - T_true[:3, 3]) < np.linalg.norm(
        kept.T_world_cam[:3, 3] - T_true[:3, 3]
    )


def test_a_calibration_file_of_another_map_is_named_as_such(cal_world: dict, tmp_path: Path, capsys, caplog) -> None:
    """A `localize calibrate` file records the keyframes of the map it was fitted against; used with a map of other
    keyframes (its gate and scales are that map's), `localize images` warns, naming both maps and what to do; with
    its own map it says nothing."""
    import cv2

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.calibration import load_calibration
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.keyframe_map import keyframes_digest

    cal = tmp_path / "cal.yaml"
    assert main(["localize", "calibrate", "--map", str(cal_world["cal_map"]), "--dataset", str(cal_world["dataset"]),
                 "--split", "all", "--out", str(cal), "--max-frames", "40"]) == 0  # fmt: skip
    digest = keyframes_digest(PlaceMap(cal_world["cal_map"]).manifest)
    assert load_calibration(cal).source["map_keyframes_digest"] == digest
    assert keyframes_digest(PlaceMap(cal_world["half"]).manifest) != digest
    ds = Dataset(cal_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(np.flatnonzero(ds.frames.source_id == 1)[:2]):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    for which, warned in (("cal_map", False), ("half", True)):
        caplog.clear()
        assert main(["localize", "images", str(folder), "--map", str(cal_world[which]), "--calibration", str(cal),
                     "--out", str(tmp_path / f"{which}.csv"), "--no-progress"]) in (0, 1)  # fmt: skip
        said = [
            r.getMessage() for r in caplog.records if "the calibration was fitted against the map" in r.getMessage()
        ]
        assert bool(said) == warned, said
        if warned:
            assert str(cal_world["cal_map"]) in said[0] and "localize calibrate --map" in said[0]


def test_map_build_and_info_say_whether_the_map_is_calibrated(cal_world: dict, tmp_path: Path, capsys) -> None:
    """`map build` and `map info` say whether the map calibrated its localizer (and why not, and what to do:
    `localize calibrate`, not a rebuild that gives the same); `localize images` on an uncalibrated map says why."""
    import cv2

    from pose2rgbd.dataset import Dataset

    capsys.readouterr()
    assert main(["map", "info", str(cal_world["cal_map"])]) == 0
    assert "calibration  calibrated at build:" in capsys.readouterr().out
    small = tmp_path / "small"
    assert main(["map", "build", "--dataset", str(cal_world["dataset"]), "--out", str(small), "--sources", "0",
                 "--stride", "40", "--no-progress"]) == 0  # fmt: skip
    built = capsys.readouterr().out
    assert "calibration  not calibrated (" in built and "too few to hold out" in built
    assert "localize calibrate --map" in built
    assert main(["map", "info", str(small), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"]["status"] == "not calibrated"
    ds = Dataset(cal_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), ds.read_rgb(int(np.flatnonzero(ds.frames.source_id == 0)[3]))[..., ::-1])
    main(["localize", "images", str(folder), "--map", str(small), "--out", str(tmp_path / "p.csv"), "--no-progress"])
    said = capsys.readouterr().out
    assert "holds no calibration (" in said and "too few to hold out" in said and "map build" not in said
    assert re.search(r"world frame map: ENU metres about lat [-\d.]+, lon [-\d.]+, alt [-\d.]+ m", said), said


def test_localize_calibrate_leaves_out_frames_beyond_the_map_and_says_when_too_few_remain(
    cal_world: dict, tmp_path: Path, capsys
) -> None:
    """A map of a part of the dataset (`--piece 1/3` of the survey): `localize calibrate --split all` leaves out the
    frames beyond the map's coverage (farther than its own calibration's outer range), saying so, and fits on the
    rest; a map of every frame has none left to calibrate on: the error says that, not "a map of another place"."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.placemap import PlaceMap

    part, everything = tmp_path / "part", tmp_path / "all"
    assert main(["map", "build", "--dataset", str(cal_world["dataset"]), "--out", str(part), "--sources", "0",
                 "--piece", "1/3", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["localize", "calibrate", "--map", str(part), "--dataset", str(cal_world["dataset"]), "--split", "all",
                 "--out", str(tmp_path / "cal.yaml")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    m = re.search(r"note: (\d+) of the dataset's frames outside the map lie beyond its coverage", text)
    assert m is not None, text
    outside = len(Dataset(cal_world["dataset"])) - len(PlaceMap(part))
    assert 0 < int(m[1]) < outside
    assert main(["map", "build", "--dataset", str(cal_world["dataset"]), "--out", str(everything),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["localize", "calibrate", "--map", str(everything), "--dataset", str(cal_world["dataset"]),
                 "--split", "all", "--out", str(tmp_path / "cal2.yaml")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "only 0 of the dataset's frames lie outside the map" in err and "another place" not in err
    assert not (tmp_path / "cal2.yaml").exists()

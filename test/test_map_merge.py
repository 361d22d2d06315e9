"""A place built at scale: `map build --workers N` (a process pool over keyframes) gives the single-process map;
`map merge` joins maps built separately (one world frame checked, one vocabulary) into a map that localizes as
the whole map does; `map build --dask` runs the pieces on a Dask cluster (a local two-worker one here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_map import _localize_route, _without_depth

ARRAYS = ("poses", "intrinsics", "frames", "stamp_ns", "source_id", "kp_offsets", "kp_xy", "kp_desc", "kp_xyz",
          "images_offsets", "global")  # fmt: skip


@pytest.fixture(scope="module")
def world(map_world: dict) -> dict:
    return map_world


def _same_arrays(a: Path, b: Path, names: tuple[str, ...] = ARRAYS) -> None:
    for name in names:
        x, y = np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy")
        assert x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    for blob in ("images.bin", "depth.bin"):
        assert (a / blob).is_file() == (b / blob).is_file()
        if (a / blob).is_file():
            assert (a / blob).read_bytes() == (b / blob).read_bytes(), blob


def _survey(world: dict, n: int) -> np.ndarray:
    from pose2rgbd.dataset import Dataset

    return np.flatnonzero(Dataset(world["dataset"]).frames.source_id == 0)[:n]


def test_ordered_map_runs_in_worker_processes_in_order() -> None:
    """The pool behind `--workers`: with 2 the work runs in two other processes (each made its context once: here
    its process id) and the results come back in the items' order; with 1 it runs in this process."""
    import operator
    import os

    from pose2rgbd.placemap.pool import ordered_map

    items = list(range(0, 4000, 7))
    out = list(ordered_map(operator.add, items, workers=2, setup=os.getpid))
    pids = {r - i for r, i in zip(out, items)}  # context (the worker's pid) + item, in order
    assert len(pids) <= 2 and os.getpid() not in pids and all(p > 0 for p in pids)
    assert {r - i for r, i in zip(ordered_map(operator.add, items, workers=1, setup=os.getpid), items)} == {os.getpid()}


def test_two_workers_build_the_single_process_map(world: dict, tmp_path: Path) -> None:
    """`workers: 2` (two processes: SIFT, lifting and encoding per keyframe; triangulation per keyframe pair) writes
    the map `workers: 1` writes, byte for byte in every array -- with metric depth and without it (triangulated)."""
    from pose2rgbd.placemap import MapBuildConfig, build_map

    rows = _survey(world, 90)
    rgb_only = _without_depth(world["dataset"], tmp_path / "rgb_only")
    for name, ds in (("depth", world["dataset"]), ("triangulated", rgb_only)):
        out = {}
        for w in (1, 2):
            out[w] = tmp_path / f"{name}-{w}"
            m = build_map(ds, out[w], MapBuildConfig(workers=w), rows=rows, progress=False)
            assert m["points"] == name
        _same_arrays(out[1], out[2])
        xyz = np.load(out[2] / "kp_xyz.npy")
        assert np.isfinite(xyz).all(axis=1).mean() > (0.99 if name == "depth" else 0.2)


def test_cli_workers_progress_and_piece(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`map build --workers 2` draws its progress bar (forced with --progress) up to every keyframe; `--piece 2/3`
    keeps the second of three consecutive parts of the selection; a malformed piece is a clear error."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.placemap import PlaceMap

    survey = _survey(world, 10**6)
    out = tmp_path / "p2"
    assert main(["--progress", "map", "build", "--dataset", str(world["dataset"]), "--out", str(out),
                 "--sources", "0", "--piece", "2/3", "--workers", "2", "--localization-only"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    part = np.array_split(survey, 3)[1]
    assert f"{len(part)}/{len(part)}" in err and "map keyframes" in err
    pm = PlaceMap(out)
    assert np.array_equal(pm.frames, part) and "piece 2/3" in pm.manifest["selection"]["description"]
    assert main(["map", "build", "--dataset", str(world["dataset"]), "--out", str(tmp_path / "x"),
                 "--piece", "4/3"]) != 0  # fmt: skip
    assert "1 <= K <= N" in capsys.readouterr().err


def _halves(world: dict, tmp_path: Path, *extra: str) -> list[Path]:
    from pose2rgbd.cli.main import main

    halves = []
    for k in (1, 2):
        halves.append(tmp_path / f"half{k}")
        assert main(["map", "build", "--dataset", str(world["dataset"]), "--out", str(halves[-1]), "--sources", "0",
                     "--piece", f"{k}/2", "--no-progress", *extra]) == 0  # fmt: skip
    return halves


def test_merge_of_two_half_maps_localizes_as_the_whole_map(world: dict, tmp_path: Path) -> None:
    """The survey built as two halves (`--piece 1/2`, `2/2`) and merged is the whole map's keyframes, features and
    points (metric depth: each point from its own keyframe), over ONE vocabulary learned on the union; the
    held-out crossing localizes as well as against the whole map: fix rate within 5 points, median position error
    within 20 % (or 5 cm), no fix off by more than 5 m; the merged map is self-calibrated like a built one."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.evaluation.localization import pose_errors
    from pose2rgbd.placemap import PlaceMap

    halves = _halves(world, tmp_path)
    out = tmp_path / "merged"
    assert main(["map", "merge", str(halves[1]), str(halves[0]), "--out", str(out), "--no-progress"]) == 0
    whole, merged = PlaceMap(world["map"]), PlaceMap(out)
    assert len(merged) == len(whole) == len(PlaceMap(halves[0])) + len(PlaceMap(halves[1]))
    _same_arrays(world["map"], out, ARRAYS[:-1])  # all but the global descriptors: renumbered in frame order
    assert merged.fingerprint == whole.fingerprint and merged.manifest["merged_from"][0]["path"].endswith("half2")
    # calibrated again on the merged keyframes (each half's own calibration saw only its half), like a build
    assert merged.manifest["calibration"]["status"] == "calibrated", merged.manifest["calibration"]
    assert merged.manifest["calibration"]["held_out"] >= 30
    # one vocabulary: not either half's
    for h in halves:
        with np.load(h / "vocabulary.npz") as a, np.load(out / "vocabulary.npz") as b:
            assert a["centroids"].shape == b["centroids"].shape and not np.allclose(a["centroids"], b["centroids"])
    results = {}
    for name, path in (("whole", world["map"]), ("merged", out)):
        fixes, T_true = _localize_route({**world, "map": path}, world["dataset"], use_previous_fix=False)
        ok = np.array([f.ok for f in fixes])
        pos, _ = pose_errors(np.stack([f.T_world_cam for f in fixes])[ok], T_true[ok])
        results[name] = (ok.mean(), float(np.median(pos)), float(pos.max()))
    (rate_w, med_w, _), (rate_m, med_m, max_m) = results["whole"], results["merged"]
    assert rate_m >= rate_w - 0.05 and med_m <= max(1.2 * med_w, med_w + 0.05) and max_m < 5.0, results


def test_merge_checks_the_world_frame(world: dict, tmp_path: Path) -> None:
    """Maps in different world frames are refused with what differs: another frame name, another datum, no datum
    on one side, two datasets without a datum. Maps of two datasets with one datum merge (a fingerprint of their
    own: neither dataset's frames are this map's); a keyframe in both pieces is kept once."""
    from pose2rgbd.placemap import MapError, PlaceMap, merge_maps

    halves = _halves(world, tmp_path, "--localization-only", "--max-features", "200")

    def edited(name: str, change: dict) -> Path:
        p = tmp_path / name
        shutil.copytree(halves[1], p)
        m = json.loads((p / "map.json").read_text())
        m["dataset"].update(change)
        (p / "map.json").write_text(json.dumps(m))
        return p

    datum = json.loads((halves[0] / "map.json").read_text())["dataset"]["datum"]
    cases = {
        "frame": ({"world_frame": "odom"}, "world frame 'odom'"),
        "datum": (
            {"datum": {**datum, "lat_deg": datum["lat_deg"] + 1e-4}},
            r"different datums.*or join the datasets first \(`pose2rgbd dataset merge DATASET_A DATASET_B",
        ),
        "nodatum": ({"datum": None}, "has a datum"),
    }
    for name, (change, match) in cases.items():
        with pytest.raises(MapError, match=match):
            merge_maps([halves[0], edited(name, change)], tmp_path / "m", progress=False)
    a = edited("a", {"datum": None, "fingerprint": "aaaa"})
    b = edited("b", {"datum": None, "fingerprint": "bbbb"})
    with pytest.raises(MapError, match="different datasets without a datum"):
        merge_maps([a, b], tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
    # another dataset (another city, the same datum) joins; the same half twice counts once
    other = tmp_path / "other"
    from pose2rgbd.placemap import MapBuildConfig, build_map

    build_map(world["other"], other, MapBuildConfig(keyframe_images=False), progress=False)
    m = merge_maps([halves[0], other], tmp_path / "two", progress=False)
    pm = PlaceMap(tmp_path / "two")
    assert len(pm) == len(PlaceMap(halves[0])) + len(PlaceMap(other)) and m["dataset"]["fingerprint"].startswith(
        "merged"
    )
    with pytest.raises(MapError, match="another dataset"):
        pm.check_dataset(PlaceMap(other).fingerprint, "the other dataset")
    m = merge_maps([halves[0], halves[0], halves[1]], tmp_path / "dup", progress=False)
    assert m["keyframes"] == len(PlaceMap(world["map"])) and "kept once" in m["merge_notes"][0]


@pytest.mark.slow
def test_build_on_a_local_dask_cluster(world: dict, tmp_path: Path) -> None:
    """`map build --dask`: the survey's pieces as tasks on a two-worker local Dask cluster (two processes, one
    thread each), merged: the whole map's keyframes, features and points; the staging folder is gone."""
    distributed = pytest.importorskip(
        "distributed", reason="Dask distributed is not installed (pose2rgbd[distributed])"
    )
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, PlaceMap
    from pose2rgbd.placemap.pieces import build_in_pieces

    out = tmp_path / "dask"
    cfg = MapBuildConfig(selection=MapSelection(sources=[0]))
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        m = build_in_pieces(world["dataset"], out, cfg, scheduler=client, progress=False)
        assert len(client.nthreads()) == 2
    assert len(m["merged_from"]) == 2 and "2 pieces on a Dask cluster" in m["selection"]["description"]
    _same_arrays(world["map"], out, ARRAYS[:-1])
    assert PlaceMap(out).manifest["selection"]["sources"] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dask"]


def test_dask_build_without_dask_names_the_extra(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without Dask distributed installed, `map build --dask` says which extra to install; nothing is written."""
    import sys

    from pose2rgbd.cli.main import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: importing it raises ImportError
    out = tmp_path / "m"
    assert main(["map", "build", "--dataset", str(world["dataset"]), "--out", str(out), "--dask", "tcp://127.0.0.1:1",
                 "--no-progress"]) != 0  # fmt: skip
    assert "pip install 'pose2rgbd[distributed]'" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_merge_keeps_a_view_once_across_datasets(world: dict, tmp_path: Path) -> None:
    """Maps of different datasets (fingerprints) that hold one view twice -- the same flight converted twice, a
    dataset appended to since its first map, a merged map merged again with one of its inputs -- keep it once: the
    same image bytes, or (maps without images) the same instant and pose. Kept twice, the self-calibration held out
    keyframes whose twins stayed in the map and fitted covariances 8x too small in standard deviation."""
    from pose2rgbd.placemap import PlaceMap, merge_maps

    halves = _halves(world, tmp_path, "--localization-only", "--max-features", "200")
    n0, n1 = len(PlaceMap(halves[0])), len(PlaceMap(halves[1]))

    def as_other_dataset(src: Path, name: str) -> Path:  # the same keyframes, another dataset's fingerprint
        p = tmp_path / name
        shutil.copytree(src, p)
        m = json.loads((p / "map.json").read_text())
        m["dataset"]["fingerprint"] = f"{name}-" + m["dataset"]["fingerprint"]
        (p / "map.json").write_text(json.dumps(m))
        return p

    twin = as_other_dataset(halves[0], "twin")
    m = merge_maps([halves[0], twin], tmp_path / "m1", progress=False)  # no images: by instant and pose
    assert m["keyframes"] == n0 and any("views an earlier map holds already" in n for n in m["merge_notes"])
    assert [e["kept"] for e in m["merged_from"]] == [n0, 0]
    # a merged map merged again with one of its inputs: nothing twice, no dataset's frames counted twice
    merge_maps([halves[0], as_other_dataset(halves[1], "b")], tmp_path / "ab", progress=False)
    # each dataset's flight numbered apart (the raw ids were 0 for both)
    assert np.unique(np.load(tmp_path / "ab" / "source_id.npy")).tolist() == [0, 1]
    again = merge_maps([tmp_path / "ab", twin], tmp_path / "aba", progress=False)
    assert again["keyframes"] == n0 + n1
    frames = {d["fingerprint"]: d["frames"] for d in again["dataset"]["datasets"]}
    assert len(frames) == 3 and again["dataset"]["frames"] == sum(frames.values())
    # maps with images: the same encoded image is the same view whatever its stamp says
    full = _halves(world, tmp_path / "img")
    stamps = np.load(full[0] / "stamp_ns.npy")
    shifted = as_other_dataset(full[0], "shifted")
    np.save(shifted / "stamp_ns.npy", stamps + 10**12)
    m = merge_maps([full[0], shifted], tmp_path / "m2", progress=False)
    assert m["keyframes"] == len(PlaceMap(full[0]))


def test_merge_of_datasets_converted_with_different_datums_into_one_frame(world: dict, tmp_path: Path) -> None:
    """Two datasets converted into one robot TF frame, each with its own datum (the first fix of each flight) and the
    fitted transform from its ENU frame: one world frame, merged with a note; the same datums without transforms
    that place a fix alike (11 m apart) are refused."""
    from pose2rgbd.geometry.geodesy import Datum
    from pose2rgbd.placemap import MapError, merge_maps

    halves = _halves(world, tmp_path, "--localization-only", "--max-features", "200")
    d0 = json.loads((halves[0] / "map.json").read_text())["dataset"]["datum"]
    a = Datum(d0["lat_deg"], d0["lon_deg"], d0["alt_m"], (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    b0 = Datum(d0["lat_deg"] + 1e-4, d0["lon_deg"], d0["alt_m"])  # 11 m north
    e = a.to_enu(np.array(b0.lat_deg), np.array(b0.lon_deg), np.array(b0.alt_m))  # b's origin in a's ENU = world
    b = Datum(b0.lat_deg, b0.lon_deg, b0.alt_m, (float(e[0]), float(e[1]), float(e[2]), 0.0, 0.0, 0.0, 1.0))

    def with_datum(src: Path, name: str, d: Datum) -> Path:
        p = tmp_path / name
        shutil.copytree(src, p)
        m = json.loads((p / "map.json").read_text())
        m["dataset"]["datum"] = d.to_dict()
        (p / "map.json").write_text(json.dumps(m))
        return p

    A, B = with_datum(halves[0], "A", a), with_datum(halves[1], "B", b)
    m = merge_maps([A, B], tmp_path / "ab", progress=False)
    assert any("converted with different datums into one frame" in n for n in m["merge_notes"]), m["merge_notes"]
    wrong = with_datum(halves[1], "wrong", Datum(b0.lat_deg, b0.lon_deg, b0.alt_m, (0.0,) * 6 + (1.0,)))
    with pytest.raises(MapError, match=r"different datums .* disagree: a GPS fix lands up to 11\.\d+ m apart"):
        merge_maps([A, wrong], tmp_path / "bad", progress=False)

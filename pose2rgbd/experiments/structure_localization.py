"""The structure localizer in ``pose2rgbd experiments localization``, beside PoseGAN, configA and retrieval.

Per (split, seed) the map is built from that split's training frames (the same frames the learned localizers
train on) of a copy of the synthetic world rendered at ``structure_size`` (the same seed, routes and stride, so
frame ``i`` is the same pose in both); the test frames are the same. Modes:

* ``no prior``: every test image alone (unordered photos);
* ``sequence``: the test frames of each source in time order, the previous fix as the next image's prior;
* ``GPS prior``: the true position plus ``gps_noise_m`` Gaussian noise per axis as a position prior;
* ``PoseGAN prior``: the main learned model's estimate (its ``estimates.npz``) as a position prior;
* ``grayscale``: the no-prior mode on grayscale test images (Table 2);
* ``sparse map``: a map of every ``sparse_every``-th training frame, the training frames between as queries.

Each mode reports the share of frames with a fix, the errors over the fixes, how many fixes are off by more than
``wrong_m`` (a confident wrong pose), and the time per frame (image in, pose out). A map that holds any test frame
is refused: a localizer scored on its own keyframes measures nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.config import ordinal
from pose2rgbd.errors import ConfigError
from pose2rgbd.jsonio import json_text

log = logging.getLogger(__name__)

MODES = ("no prior", "sequence", "GPS prior", "PoseGAN prior", "grayscale", "sparse map")


def check_map_excludes(map_frames: np.ndarray, test: np.ndarray, what: str) -> None:
    """Refuse a map whose keyframes include any of the ``test`` frames."""
    both = np.intersect1d(np.asarray(map_frames), np.asarray(test))
    if len(both):
        raise ConfigError(
            f"{what} holds {len(both)} of the test frames (e.g. frame {int(both[0])}): a localizer scored on its own "
            "keyframes measures nothing; build the map from the training frames only (`pose2rgbd map build --split`)"
        )


def structure_dataset(cfg: Any, out: Path, *, progress: bool) -> Path:
    """The synthetic world at ``structure_size`` (same seed, routes and stride as the experiments' dataset)."""
    from pose2rgbd.experiments.runner import ExperimentsConfig, prepare_dataset

    if cfg.dataset:
        return Path(cfg.dataset)
    ecfg = ExperimentsConfig(size=cfg.structure_size, sim_seed=cfg.sim_seed, sim_stride=cfg.sim_stride,
                             sim_survey_s=cfg.sim_survey_s, sim_route_s=cfg.sim_route_s)  # fmt: skip
    sub = out / f"structure{cfg.structure_size}"
    sub.mkdir(parents=True, exist_ok=True)
    return prepare_dataset(ecfg, sub, progress=progress)


def _summary(name: str, fixes: list[Any], T_true: np.ndarray, seconds: list[float], wrong_m: float) -> dict[str, Any]:
    from pose2rgbd.evaluation.localization import pose_errors, summarize

    ok = np.array([f.ok for f in fixes], bool)
    if ok.any():
        pos, rot = pose_errors(np.stack([f.T_world_cam for f in fixes])[ok], T_true[ok])
    else:
        pos, rot = np.zeros(0), np.zeros(0)
    reasons: dict[str, int] = {}
    for f in fixes:
        if not f.ok:
            reasons[f.reason] = reasons.get(f.reason, 0) + 1
    ms = 1000.0 * np.asarray(seconds)
    return {
        "name": name,
        "frames": len(fixes),
        "fix_rate": float(ok.mean()) if len(ok) else float("nan"),
        "wrong_fixes": int(np.sum(pos > wrong_m)),
        "max_position_m": float(pos.max()) if len(pos) else float("nan"),
        "position_m": summarize(pos),
        "orientation_deg": summarize(rot),
        "ms_per_frame": float(np.mean(ms)) if len(ms) else float("nan"),
        "ms_p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "ms_p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "no_fix_reasons": reasons,
    }


def _run(loc: Any, ds: Any, rows: np.ndarray, priors: list[Any] | None, *, gray: bool, sequence: bool,
         source: np.ndarray) -> tuple[list[Any], list[float]]:  # fmt: skip
    import cv2

    fixes, secs = [], []
    prev = None
    for k, i in enumerate(rows):
        if not sequence or source[i] != prev:
            loc.reset()
            prev = source[i]
        img = ds.read_rgb(int(i))
        if gray:
            img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
        t0 = time.perf_counter()
        fixes.append(loc.localize_one(img, None if priors is None else priors[k]))
        secs.append(time.perf_counter() - t0)
    return fixes, secs


def run_structure(cfg: Any, split: str, seed: int, test: np.ndarray, main_estimates: Path | None, out: Path,
                  *, progress: bool) -> dict[str, Any]:  # fmt: skip
    """The structure localizer's rows for one (split, seed) (see the module docstring); reused when done."""
    import dataclasses

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.splits import make_split
    from pose2rgbd.inference.structure import Prior, StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import MapBuildConfig, PlaceMap, build_map

    dpath = structure_dataset(cfg, out, progress=progress)
    run_dir = out / "runs" / split / f"structure-s{seed}"
    done = run_dir / "result.json"
    key = {"split": split, "seed": seed, "size": cfg.structure_size, "dataset": str(dpath), "test": test.tolist(),
           "map": cfg.structure_map, "sparse_every": cfg.sparse_every, "gps_noise_m": cfg.gps_noise_m,
           "version": 3}  # fmt: skip
    if done.exists():
        prev: dict[str, Any] = json.loads(done.read_text())
        if prev.get("key") == key:
            return prev
    run_dir.mkdir(parents=True, exist_ok=True)
    ds = Dataset(dpath)
    f = ds.frames
    sp = make_split(f.source_id, f.stamp_ns, split, seed=seed, val_fraction=0.2, test_fraction=0.0)
    t0 = time.perf_counter()
    if cfg.structure_map:
        map_path = Path(cfg.structure_map)
        pm = PlaceMap(map_path)
        pm.check_dataset(ds.fingerprint(), str(dpath), path=ds.path, frames=len(ds))
        check_map_excludes(pm.frames, test, f"the map {map_path}")
    else:
        map_path = run_dir / "map"
        build_map(dpath, map_path, MapBuildConfig(), rows=sp.train, overwrite=True, progress=progress)
        pm = PlaceMap(map_path)
        check_map_excludes(pm.frames, test, f"the map {map_path}")
    build_s = time.perf_counter() - t0
    T = f.T_world_cam
    rows: list[dict[str, Any]] = []
    base = StructureConfig(map_pose_error=False)  # scored against the dataset's own poses: map-relative covariance
    cam = pm.camera(0)  # the queries are frames of the map's dataset: its camera
    unordered = StructureLocalizer(pm, dataclasses.replace(base, use_previous_fix=False), cam)
    seq = StructureLocalizer(pm, base, cam)
    order = test[np.lexsort((f.stamp_ns[test], f.source_id[test]))]
    runs: list[tuple[str, Any, np.ndarray, Any, bool, bool]] = [
        ("no prior", unordered, test, None, False, False),
        ("sequence", seq, order, None, False, True),
    ]
    rng = np.random.default_rng(seed)
    gps = [Prior(T[i][:3, 3] + rng.normal(0, cfg.gps_noise_m, 3), source="gps") for i in test]
    runs.append(("GPS prior", unordered, test, gps, False, False))
    if main_estimates is not None and main_estimates.exists():
        z = np.load(main_estimates)
        if np.array_equal(z["test"], test):
            est = [Prior(Te[:3, 3].copy(), None, cfg.posegan_prior_radius_m, "posegan") for Te in z["T_est"]]
            runs.append(("PoseGAN prior", unordered, test, est, False, False))
    if cfg.grayscale:
        runs.append(("grayscale", unordered, test, None, True, False))
    for name, loc, idx, priors, gray, sequence in runs:
        log.info("structure localizer, %s split, seed %d: %s (%d frames)", split, seed, name, len(idx))
        fixes, secs = _run(loc, ds, idx, priors, gray=gray, sequence=sequence, source=f.source_id)
        rows.append(_summary(f"structure, {name}", fixes, T[idx], secs, cfg.wrong_m))
    recall = place_recognition_recall(pm, ds, test)
    sparse = _sparse(cfg, dpath, ds, sp.train, run_dir, progress=progress)
    if sparse is not None:
        rows.append(sparse)
    info = pm.info()
    res = {"key": key, "split": split, "seed": seed, "rows": rows, "map_keyframes": len(pm),
           "map_build_s": build_s, "map_mb": info["size_parts"]["keyframe_store"] / 1e6, "size": cfg.structure_size,
           "test_frames": len(test), "place_recognition": recall}  # fmt: skip
    write_text_atomic(done, json_text(res, nan_as_null=False, default=float))
    return res


RECALL_M = 25.0
RECALL_DEG = 45.0


def place_recognition_recall(pm: Any, ds: Any, test: np.ndarray, ks: tuple[int, ...] = (1, 5, 20)) -> dict[str, Any]:
    """Recall@k of place recognition alone, VLAD (the map's) against the grey-thumbnail baseline: the share of
    test images whose ``k`` most similar keyframes include one within ``RECALL_M`` metres and ``RECALL_DEG`` degrees
    of the true pose (a keyframe that sees the same place)."""
    from pose2rgbd.geometry.coverage import PoseSet
    from pose2rgbd.placemap.features import FeatureConfig, extract
    from pose2rgbd.placemap.place import GlobalDescriber

    thumb = GlobalDescriber("thumbnail", thumb=16)
    kf_thumb = np.stack([thumb.thumbnail(pm.rgb(k)) for k in range(len(pm))])
    ps = PoseSet(pm.T_world_cam, rot_weight_m=0.0)
    hits: dict[str, dict[int, list[bool]]] = {"vlad": {k: [] for k in ks}, "thumbnail": {k: [] for k in ks}}
    T = ds.frames.T_world_cam
    for i in test:
        img = ds.read_rgb(int(i))
        dt, ang = ps.parts(T[i])
        good = (dt[0] <= RECALL_M) & (np.degrees(ang[0]) <= RECALL_DEG)
        sims = {"vlad": pm.global_desc @ pm.describer.describe(img, extract(img, FeatureConfig()).desc),
                "thumbnail": kf_thumb @ thumb.thumbnail(img)}  # fmt: skip
        for name, sim in sims.items():
            order = np.argsort(-sim, kind="stable")
            for k in ks:
                hits[name][k].append(bool(good[order[:k]].any()))
    reachable = float(np.mean([((ps.parts(T[i])[0][0] <= RECALL_M)
                                & (np.degrees(ps.parts(T[i])[1][0]) <= RECALL_DEG)).any() for i in test]))  # fmt: skip
    return {"radius_m": RECALL_M, "angle_deg": RECALL_DEG, "reachable": reachable,
            **{name: {str(k): float(np.mean(v)) for k, v in h.items()} for name, h in hits.items()}}  # fmt: skip


def _sparse(cfg: Any, dpath: Path, ds: Any, train: np.ndarray, run_dir: Path, *, progress: bool) -> dict | None:  # type: ignore[type-arg]
    """A map of every N-th training frame (in time order per source), the training frames between as queries."""
    from pose2rgbd.evaluation.plots import evenly_spaced
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import MapBuildConfig, PlaceMap, build_map

    if cfg.sparse_every < 2:
        return None
    f = ds.frames
    tr = train[np.lexsort((f.stamp_ns[train], f.source_id[train]))]
    keep = tr[:: cfg.sparse_every]
    queries = np.setdiff1d(tr, keep)
    if cfg.eval_max_frames and len(queries) > cfg.eval_max_frames:
        queries = queries[evenly_spaced(len(queries), cfg.eval_max_frames)]
    build_map(dpath, run_dir / "map_sparse", MapBuildConfig(), rows=np.sort(keep), overwrite=True, progress=progress)
    pm = PlaceMap(run_dir / "map_sparse")
    check_map_excludes(pm.frames, queries, "the sparse map")

    loc = StructureLocalizer(pm, StructureConfig(use_previous_fix=False, map_pose_error=False), pm.camera(0))
    fixes, secs = _run(loc, ds, queries, None, gray=False, sequence=False, source=f.source_id)
    what = f"structure, sparse map (every {ordinal(cfg.sparse_every)}, no prior)"
    row = _summary(what, fixes, f.T_world_cam[queries], secs, cfg.wrong_m)
    row["map_keyframes"] = len(pm)
    return row


def structure_markdown(results: list[dict[str, Any]]) -> str:
    """The structure localizer's table of one split (mean over seeds of each number)."""
    from pose2rgbd.evaluation.localization import _f

    if not results:
        return ""
    r0 = results[0]
    md = [
        f"\nStructure localizer (place map of the {r0['map_keyframes']} training frames at "
        f"{r0['size']}x{r0['size']}: {r0['map_mb']:.0f} MB, built in {r0['map_build_s']:.0f} s; "
        f"{len(results)} seed(s)). Errors over the frames with a fix; wrong = fixes off by more than 5 m:\n",
        "| mode | frames | with a fix | wrong | median pos (m) | median rot (deg) | p90 pos (m) | p90 rot (deg) "
        "| ms / frame (p50 / p99) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = [r["name"] for r in r0["rows"]]
    for name in names:
        rs = [next(x for x in res["rows"] if x["name"] == name) for res in results if
              any(x["name"] == name for x in res["rows"])]  # fmt: skip

        def m(get: Any, rs: list[dict[str, Any]] = rs) -> float:
            return float(np.mean([get(x) for x in rs]))

        pos, rot = m(lambda x: x["position_m"]["median"]), m(lambda x: x["orientation_deg"]["median"])
        p90, r90 = m(lambda x: x["position_m"]["p90"]), m(lambda x: x["orientation_deg"]["p90"])
        md.append(
            f"| {name} | {int(m(lambda x: x['frames']))} | {100 * m(lambda x: x['fix_rate']):.1f} % "
            f"| {int(sum(x['wrong_fixes'] for x in rs))} | {_f(pos, '.3f')} | {_f(rot, '.3f')} | {_f(p90, '.2f')} "
            f"| {_f(r90, '.2f')} | {m(lambda x: x['ms_p50']):.0f} / {m(lambda x: x['ms_p99']):.0f} |"
        )
    pr = [r["place_recognition"] for r in results if r.get("place_recognition")]
    if pr:
        ks = list(pr[0]["vlad"])
        md.append(
            f"\nPlace recognition alone (recall@k: the k most similar keyframes include one within "
            f"{pr[0]['radius_m']:g} m and {pr[0]['angle_deg']:g} deg of the true pose; "
            f"{100 * float(np.mean([p['reachable'] for p in pr])):.0f} % of the test frames have such a keyframe "
            "at all):\n\n| descriptor | " + " | ".join(f"recall@{k}" for k in ks) + " |\n|---|" + "---:|" * len(ks)
        )
        for name, label_ in (
            ("vlad", "VLAD over the map's SIFT (the localizer's)"),
            ("thumbnail", "16x16 grey thumbnail"),
        ):
            vals = " | ".join(f"{100 * float(np.mean([p[name][k] for p in pr])):.1f} %" for k in ks)
            md.append(f"| {label_} | {vals} |")
    return "\n".join(md) + "\n"

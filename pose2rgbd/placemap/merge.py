"""Join place maps built separately into one: ``pose2rgbd map merge A B ... --out M``.

Pieces of one large place (``map build --selection.piece K/N`` on several machines), or maps of several flights
over the same place, become one map the localizer and the renderers read like any other:

- **One world frame, checked** (:func:`check_same_frame`): every map's dataset names the same world frame and
  the same datum (the geodetic origin of its ENU frame), or -- datasets converted into one robot TF frame, each
  with the transform from its ENU frame -- datums whose fits place a GPS fix within :data:`WORLD_FIT_TOL_M` of
  each other in that frame; maps whose datasets have no datum are joined only when
  they come from the same dataset (the same fingerprint) -- two datasets' own frames without a datum are not
  known to have anything in common. Anything else is refused with what to do.
- **Keyframes** are copied as stored (encoded images and depth, features with their world points: nothing is
  decoded or extracted again) and numbered anew: pieces of one dataset in its frame order (a keyframe in two
  pieces once), maps of different datasets one after the other, in the order given, a view an earlier map holds
  already (the same image, or the same instant and pose) once. The k-d tree over the poses
  is built from the merged poses when the map is opened (:class:`~pose2rgbd.placemap.PlaceMap`).
- **One place-recognition vocabulary**: each map learned its own, and VLADs over different vocabularies cannot
  be compared, so the vocabulary is learned again as ``map build`` learns it -- k-means on a seeded sample of
  ``global_desc.sample`` descriptors, now of the union -- and every keyframe's VLAD and the PCA are computed again
  over it (seconds per thousand keyframes, next to the minutes their SIFT took). Requiring one vocabulary for all
  pieces instead would need it before the first piece is built, and a vocabulary learned on one flight describes
  another flight's places less well. Thumbnail descriptors do not depend on other keyframes: they are kept.
- Images and depth are kept when every map has them (else the merged map has none: a localization-only map),
  all maps must share one image size and codec, and the result is written atomically (:class:`MapWriter`).

Points are not triangulated again across pieces: in maps without depth, a keypoint at a piece's border that only
the other piece's keyframes could have triangulated stays without a point. With metric depth every point comes
from its own keyframe, so pieces of one dataset merge into the same features and points as one build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.dataset.same_views import SameViews
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.geodesy import fit_gap_m
from pose2rgbd.placemap.build import CalibrateStep, MapBuildConfig, SelfCalibrationConfig
from pose2rgbd.placemap.format import MERGED_PREFIX, PLACE_MAP, MapError, MapWriter
from pose2rgbd.placemap.place import GlobalConfig, GlobalDescriber
from pose2rgbd.placemap.place_map import PlaceMap
from pose2rgbd.placemap.view import MapView
from pose2rgbd.progress import bar

DATUM_TOL_DEG = 1e-9  # about 0.1 mm on the ground
DATUM_TOL_M = 1e-3
# two datasets converted into one robot TF frame fit the GPS into it apart by their GPS noise: a fix landing within
# this in both is one frame (two fits of 0.5 m GPS noise: 0.16 m apart over a 150 m flight)
WORLD_FIT_TOL_M = 0.5


# what a refusal of maps in different frames offers besides converting again: the datasets joined into one frame
# through their GPS (pose2rgbd.dataset.merge), then one map of them
DATASET_MERGE_HINT = (
    "`pose2rgbd dataset merge DATASET_A DATASET_B --out D` moves each into the first's frame through the GPS; then "
    "`pose2rgbd map build --dataset D`"
)


def check_same_frame(maps: Sequence[PlaceMap]) -> list[str]:
    """Refuse (:class:`MapError`) maps whose poses are not in one world frame (see the module docstring); the
    notes to keep (datasets converted into a robot's TF frame whose GPS fits differ within :data:`WORLD_FIT_TOL_M`).
    """
    first = maps[0]
    notes: list[str] = []
    for m in maps[1:]:
        if m.world_frame != first.world_frame:
            raise MapError(
                f"{m.path} is in world frame {m.world_frame!r}, {first.path} in {first.world_frame!r}: maps are merged "
                "only in one world frame; convert their datasets into the same frame and build the maps again"
                + (
                    ""
                    if first.datum is None or m.datum is None
                    else f", or join the datasets first ({DATASET_MERGE_HINT})"
                )
            )
        da, db = first.datum, m.datum
        if (da is None) != (db is None):
            has, lacks = (first, m) if db is None else (m, first)
            raise MapError(
                f"{has.path} has a datum (the geodetic origin of its world frame), {lacks.path} has none: their "
                "world frames cannot be the same; convert both datasets with one datum (--datum LAT,LON,ALT)"
            )
        if da is not None and db is not None:
            other_origin = (
                abs(da.lat_deg - db.lat_deg) > DATUM_TOL_DEG
                or abs(da.lon_deg - db.lon_deg) > DATUM_TOL_DEG
                or abs(da.alt_m - db.alt_m) > DATUM_TOL_M
            )
            # datasets converted into one robot TF frame (each datum's ENU frame placed in it) may have different
            # datums: the check below is where a GPS fix lands in the world through each (the first kept)
            if other_origin and (da.world_from_enu is None or db.world_from_enu is None):
                raise MapError(
                    f"{m.path} and {first.path} have different datums ({db.lat_deg:.9f}, {db.lon_deg:.9f}, "
                    f"{db.alt_m:.3f} m vs {da.lat_deg:.9f}, {da.lon_deg:.9f}, {da.alt_m:.3f} m): their world frames "
                    "have different origins; convert the datasets with one datum (--datum LAT,LON,ALT) and build the "
                    f"maps again, or join the datasets first ({DATASET_MERGE_HINT})"
                )
            gap = fit_gap_m(_positions(first, m), da, db)
            if gap > WORLD_FIT_TOL_M and other_origin:
                raise MapError(
                    f"{m.path} and {first.path} have different datums ({db.lat_deg:.9f}, {db.lon_deg:.9f}, "
                    f"{db.alt_m:.3f} m vs {da.lat_deg:.9f}, {da.lon_deg:.9f}, {da.alt_m:.3f} m) and their GPS fits "
                    f"into {first.world_frame!r} disagree: a GPS fix lands up to {gap:.2f} m apart in the two (more "
                    f"than {WORLD_FIT_TOL_M} m); their world frames are not the same; convert the datasets with one "
                    f"datum (--datum LAT,LON,ALT) into one frame and build the maps again, or join the datasets first "
                    f"({DATASET_MERGE_HINT})"
                )
            if gap > WORLD_FIT_TOL_M:
                raise MapError(
                    f"{m.path} and {first.path} have one datum but place its ENU frame differently in the world frame "
                    f"{first.world_frame!r}: a GPS fix lands up to {gap:.2f} m apart in the two over their keyframes "
                    f"(more than {WORLD_FIT_TOL_M} m: two conversions into different robot frames of one name, or "
                    "GPS fits far apart); their world frames are not the same; convert the datasets into one frame "
                    "(convert bag --world-frame enu for both, with one --datum) and build the maps again, or join the "
                    f"datasets first ({DATASET_MERGE_HINT})"
                )
            if other_origin:
                notes.append(
                    f"{m.path.name} and {first.path.name} were converted with different datums into one frame "
                    f"{first.world_frame!r}: their GPS fits agree within {gap:.2f} m over their keyframes (within "
                    f"{WORLD_FIT_TOL_M} m: one frame); the merged map keeps {first.path.name}'s datum"
                )
            elif gap > DATUM_TOL_M:
                notes.append(
                    f"{m.path.name} and {first.path.name}: their conversions' GPS fits into {first.world_frame!r} "
                    f"differ by up to {gap:.2f} m over their keyframes (within {WORLD_FIT_TOL_M} m: one frame); the "
                    f"merged map keeps {first.path.name}'s datum"
                )
        elif m.fingerprint != first.fingerprint:
            raise MapError(
                f"{m.path} and {first.path} come from different datasets without a datum (GPS origin): nothing says "
                "their world frames are the same; merge pieces of one dataset, or convert the datasets with one "
                "datum (--datum LAT,LON,ALT)"
            )
    return notes


def _positions(*maps: PlaceMap) -> np.ndarray:
    """The keyframe positions of ``maps``, ``(N, 3)``: where :func:`fit_gap_m` compares two datums' fits."""
    return np.concatenate([np.asarray(pm.T_world_cam, np.float64)[:, :3, 3] for pm in maps])


def _common(dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The items every dict has with the same value."""
    return {k: v for k, v in dicts[0].items() if all(k in d and d[k] == v for d in dicts[1:])}


def _order(maps: Sequence[PlaceMap], same_dataset: bool) -> tuple[list[tuple[int, int]], int]:
    """``(map, keyframe)`` of the merged map's keyframes, in their new order (see the module docstring), and how many
    keyframes of maps of different datasets were left out as the same view as one kept (:func:`_same_views`)."""
    entries = [(m, k) for m, pm in enumerate(maps) for k in range(len(pm))]
    if not same_dataset:
        kept = _same_views(maps, entries)
        return kept, len(entries) - len(kept)
    frames = np.concatenate([pm.frames for pm in maps])
    order = np.argsort(frames, kind="stable")  # frame order; a frame in two maps: the first map's copy first
    _, first = np.unique(frames[order], return_index=True)
    return [entries[int(i)] for i in order[first]], 0


def _same_views(maps: Sequence[PlaceMap], entries: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``entries`` without the keyframes of a later map that are a kept keyframe of an earlier map again (the rule of
    :mod:`pose2rgbd.dataset.same_views`: the same encoded image, or the same instant and pose). Maps of different
    datasets can hold one view twice (a map merged again with one of its inputs, a flight converted
    twice, a dataset appended to after its first map); kept twice, the merged map's self-calibration holds out a
    keyframe whose twin is still in the map and sees no error, and every fix's covariance shrinks with it."""
    kept: list[tuple[int, int]] = []
    views = SameViews()
    for m, k in entries:
        rgb, _ = maps[m].encoded(k)
        stamps = maps[m].stamp_ns
        stamp = None if stamps is None else int(stamps[k])
        if views.offer(m, hashlib.sha1(rgb).digest() if rgb else b"", stamp, maps[m].T_world_cam[k]):
            kept.append((m, k))
    return kept


def merge_maps(
    maps: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    global_cfg: GlobalConfig | None = None,
    seed: int = 0,
    selection: dict[str, Any] | None = None,
    calibrate: CalibrateStep | None = None,
    calibration: SelfCalibrationConfig | None = None,
) -> dict[str, Any]:
    """Merge the place maps ``maps`` into ``out`` (see the module docstring); returns the manifest, whose
    ``merge_notes`` say what was left out. ``global_cfg``: the vocabulary's settings (default: the first map's);
    ``selection``: the manifest's selection (default: what the maps' selections have in common); ``calibrate``:
    the self-calibration ``map build`` runs (:func:`pose2rgbd.inference.self_calibration.self_calibrate`), run
    again on the merged keyframes -- the pieces' own calibrations saw only their piece -- with ``calibration``'s
    settings (default: ``map build``'s)."""
    from pose2rgbd import config as cfgmod
    from pose2rgbd.output_guard import check_output, refuse_existing

    t0 = time.monotonic()
    if len(maps) < 2:
        raise ConfigError(f"map merge needs at least two maps, got {len(maps)}")
    check_output(out, PLACE_MAP, inputs=list(maps), overwrite=overwrite)
    refuse_existing(out, overwrite=overwrite)
    pms = [PlaceMap(p, cache_keyframes=0) for p in maps]
    frame_notes = check_same_frame(pms)
    first = pms[0]
    for pm in pms[1:]:
        if pm.image_hw != first.image_hw:
            raise MapError(
                f"{pm.path} has {pm.image_hw[1]}x{pm.image_hw[0]} keyframes, {first.path} "
                f"{first.image_hw[1]}x{first.image_hw[0]}: a map holds one image size; build the maps at one size"
            )
    notes: list[str] = list(frame_notes)
    has_images = all(pm.manifest.get("keyframe_images", True) for pm in pms)
    has_depth = has_images and all(pm.has_depth for pm in pms)
    if not has_images and any(pm.manifest.get("keyframe_images", True) for pm in pms):
        notes.append("keyframe images and depth left out: not every map has them (a localization-only map)")
    elif not has_depth and any(pm.has_depth for pm in pms):
        notes.append("depth left out: not every map has it")
    codecs = {str(pm.manifest["image"].get("codec")) for pm in pms}
    if has_images and len(codecs) > 1:
        raise MapError(
            f"the maps store their images as {' and '.join(sorted(codecs))}: build them with one --image-codec"
        )
    kinds = {pm.describer.kind for pm in pms}
    if len(kinds) > 1:
        raise MapError(f"the maps use different place recognition ({', '.join(sorted(kinds))}): build them alike")
    keys = {f.name for f in dataclasses.fields(GlobalConfig)}
    stored = {k: v for k, v in first.manifest.get("global", {}).items() if k in keys}
    gcfg = global_cfg or cfgmod.from_dict(GlobalConfig, stored, where=f"{first.path}: global")
    same_dataset = len({pm.fingerprint for pm in pms}) == 1
    entries, twins = _order(pms, same_dataset)
    if twins:
        notes.append(
            f"{twins} keyframes of later maps were views an earlier map holds already (the same image, or the same "
            "instant and pose: a map merged again with one of its inputs, a flight converted twice, a dataset appended "
            "to since its first map): kept once"
        )
    elif len(entries) < sum(len(pm) for pm in pms):
        notes.append(f"{sum(len(pm) for pm in pms) - len(entries)} keyframes were in more than one map: kept once")
    image = first.manifest["image"]
    with MapWriter(out, has_depth=has_depth, image_codec=str(image.get("codec", "jpg")),
                   image_quality=int(image.get("quality", 95))) as w:  # fmt: skip
        points: list[np.ndarray] = []
        for m, k in bar(entries, progress=progress, desc="merge keyframes", unit="keyframe"):
            rgb, depth = pms[m].encoded(k)
            f = pms[m].features(k)
            w.add_encoded(rgb if has_images else b"", depth if has_depth else None, f.xy, f.desc, f.xyz)
            points.append(f.xyz)
        n = len(entries)
        offsets, kp_xy, desc = w.read_features()
        if gcfg.kind == "vlad":  # one vocabulary, learned on the union (see the module docstring)
            describer = GlobalDescriber.learn_vocabulary(desc, gcfg, seed=seed)
            glob = describer.describe_keyframes(lambda i: desc[offsets[i] : offsets[i + 1]], n, gcfg.dims)
        else:
            thumbs = {int(pm.describer.thumb) for pm in pms}
            if len(thumbs) > 1:
                raise MapError(f"the maps' thumbnails have different sizes ({sorted(thumbs)}): build them alike")
            describer = first.describer
            glob = np.stack([pms[m].global_desc[k] for m, k in entries])
        w.save_array("global", glob.astype(np.float32))
        w.save_npz("vocabulary", **describer.arrays())
        for name in ("T_world_cam", "intrinsics", "frames", "stamp_ns", "source_id"):
            arrays = [getattr(pm, name) for pm in pms]
            if name == "source_id" and not same_dataset:  # each map's flights numbered apart (a map merged again
                w.save_array(name, _flights(pms, entries, same_dataset)[0])  # keeps its flights apart)
            elif all(a is not None for a in arrays):
                file = {"T_world_cam": "poses"}.get(name, name)
                w.save_array(file, np.stack([arrays[m][k] for m, k in entries]))
        manifest = _manifest(pms, entries, same_dataset, selection, has_images, has_depth, offsets)
        manifest["global"] = {**cfgmod.to_dict(gcfg), "dims_stored": int(glob.shape[1])}
        manifest["calibration"] = _calibration(pms, entries, offsets, kp_xy, desc, points, glob, describer, calibrate,
                                               calibration or MapBuildConfig().calibration,
                                               float(manifest["rot_weight_m"]), has_images, progress,
                                               same_dataset)  # fmt: skip
        manifest["merge_notes"] = notes
        merge_s = time.monotonic() - t0
        manifest["merge_s"] = round(merge_s, 2)
        manifest["build_s"] = round(sum(float(pm.manifest.get("build_s") or 0.0) for pm in pms) + merge_s, 2)
        w.close(manifest, overwrite=overwrite)
    return manifest


def _calibration(
    pms: Sequence[PlaceMap],
    entries: list[tuple[int, int]],
    offsets: np.ndarray,
    xy: np.ndarray,
    desc: np.ndarray,
    points: list[np.ndarray],
    glob: np.ndarray,
    describer: GlobalDescriber,
    calibrate: CalibrateStep | None,
    cfg: SelfCalibrationConfig,
    rot_weight_m: float,
    has_images: bool,
    progress: bool,
    same_dataset: bool = True,
) -> dict[str, Any] | None:
    """The merged map's self-calibration (as ``map build``'s, with ``cfg``; ``rot_weight_m``: the merged map's, as
    it is stored), or None without a ``calibrate`` step or with it turned off; a map without keyframe images has
    nothing to localize: ``not calibrated``, with why. The keyframes' flights (for the self-calibration's windows):
    their sources, each map's own when the maps are of different datasets."""
    if calibrate is None or not cfg.enabled:
        return None
    if not has_images:
        return {"status": "not calibrated", "reason": "a localization-only map holds no keyframe images to localize "
                "against the rest; calibrate with `pose2rgbd localize calibrate --map` on other frames"}  # fmt: skip
    t0 = time.monotonic()
    first = pms[0]
    triangulated = all(pm.manifest.get("points") == "triangulated" for pm in pms)
    source_id, stamp_ns = _flights(pms, entries, same_dataset)
    view = MapView(
        np.stack([pms[m].T_world_cam[k] for m, k in entries]).astype(np.float64),
        np.stack([pms[m].intrinsics[k] for m, k in entries]).astype(np.float64),
        first.image_hw, offsets, xy, desc,
        np.concatenate(points) if points else np.zeros((0, 3), np.float32),
        glob.astype(np.float32), describer, rot_weight_m, first.world_frame,
        triangulate_neighbours=MapBuildConfig().triangulate_neighbours if triangulated else 0,
        read_rgb=lambda i: pms[entries[i][0]].rgb(entries[i][1]),
        source_id=source_id,
        stamp_ns=stamp_ns,
    )  # fmt: skip
    return {**calibrate(view, cfg, progress), "seconds": round(time.monotonic() - t0, 2)}


def _flights(
    pms: Sequence[PlaceMap], entries: list[tuple[int, int]], same_dataset: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The merged keyframes' ``source_id`` (a flight's number: the dataset's source, per map when the maps are of
    different datasets, numbered 0, 1, ... in the order of (map, source); a map without sources: one flight) and
    ``stamp_ns`` (None unless every map has them)."""
    keys = []
    for m, k in entries:
        src = pms[m].source_id
        keys.append((0 if same_dataset else m, -1 if src is None else int(src[k])))
    source = np.unique(np.array(keys, np.int64), axis=0, return_inverse=True)[1].reshape(-1)
    stamps = []
    for m, k in entries:
        st = pms[m].stamp_ns
        if st is None:
            return source, None
        stamps.append(int(st[k]))
    return source, np.array(stamps, np.int64)


def _leaf_datasets(mans: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The datasets the maps were built from, each once (by fingerprint): a merged map's own ``datasets`` in its
    place, so that a map merged again counts no dataset's frames twice."""
    out: dict[str, dict[str, Any]] = {}
    for m in mans:
        d = m["dataset"]
        for leaf in d.get("datasets") or [d]:
            out.setdefault(str(leaf.get("fingerprint")), leaf)
    return list(out.values())


def _kept_per_map(pms: Sequence[PlaceMap], entries: Sequence[tuple[int, int]]) -> list[int]:
    return [sum(1 for m, _ in entries if m == i) for i in range(len(pms))]


def _manifest(
    pms: Sequence[PlaceMap],
    entries: Sequence[tuple[int, int]],
    same_dataset: bool,
    selection: dict[str, Any] | None,
    has_images: bool,
    has_depth: bool,
    offsets: np.ndarray,
) -> dict[str, Any]:
    """The merged map's manifest without the place recognition and the times."""
    mans = [pm.manifest for pm in pms]
    if same_dataset:
        dataset = dict(mans[0]["dataset"])
    else:  # a fingerprint of its own: no single dataset's frames are this map's (check_dataset refuses them all)
        fps = sorted(pm.fingerprint for pm in pms)
        dataset = {
            **_common([m["dataset"] for m in mans]),
            # one datum for the GPS prior (check_same_frame: equal, or fits within WORLD_FIT_TOL_M, the first kept)
            "datum": mans[0]["dataset"].get("datum"),
            "name": f"merged from {len(_leaf_datasets(mans))} datasets",  # (A B A: two; a merged input's own)
            "fingerprint": MERGED_PREFIX + hashlib.sha256(json.dumps(fps).encode()).hexdigest()[:16],
            "frames": int(sum(int(d.get("frames") or 0) for d in _leaf_datasets(mans))),
            "datasets": _leaf_datasets(mans),
        }
        stated = [m["dataset"]["pose_error"] for m in mans if m["dataset"].get("pose_error")]
        if stated:  # the largest of the datasets' (their keyframes side by side: a fix may match any of them)
            dataset["pose_error"] = {
                "horizontal_m": max(float(e["horizontal_m"]) for e in stated),
                "vertical_m": max(float(e["vertical_m"]) for e in stated),
                "source": f"the largest of {len(stated)} of the {len(mans)} merged datasets' pose_error",
            }
    n = len(entries)
    if selection is None:
        common = _common([m.get("selection", {}) for m in mans])
        descs = [str(m.get("selection", {}).get("description", "")) for m in mans]
        common["description"] = f"merged from {len(pms)} maps ({'; '.join(descs)})"
        selection = common
    points = sorted({str(m.get("points", "")) for m in mans})
    features = _common([m.get("features", {}) for m in mans])
    return {
        "dataset": dataset,
        "selection": {**selection, "keyframes": n},
        "keyframes": n,
        "image": dict(mans[0]["image"]),
        "depth": mans[0]["depth"] if has_depth else None,
        "keyframe_images": has_images,
        "points": " + ".join(points),
        "features": {
            **features,
            "total": int(offsets[-1]),
            # each map's share of its keyframes kept (a keyframe held by an earlier map is not counted twice)
            "extracted": int(
                sum(
                    int(m.get("features", {}).get("extracted") or 0) * kept / max(len(pm), 1)
                    for m, pm, kept in zip(mans, pms, _kept_per_map(pms, entries), strict=True)
                )
            ),
        },
        # the keyframe-weighted mean of the maps' rotation weights (each their depth's median, metres per radian)
        "rot_weight_m": float(
            np.average([float(m.get("rot_weight_m", 10.0)) for m in mans], weights=[len(p) for p in pms])
        ),
        "merged_from": [
            {
                "path": str(pm.path.resolve()),
                "keyframes": len(pm),
                "kept": _kept_per_map(pms, entries)[i],
                "fingerprint": pm.fingerprint,
                "selection": str(pm.manifest.get("selection", {}).get("description", "")),
                "created_utc": pm.manifest.get("created_utc"),
            }
            for i, pm in enumerate(pms)
        ],
    }

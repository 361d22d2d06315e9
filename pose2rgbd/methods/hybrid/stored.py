"""Where a hybrid checkpoint keeps its keyframes: a reference to a place map, or (a bundle) the keyframes inside.

A checkpoint's ``extra`` holds one of

- ``place_map``: ``{"path", "fingerprint", "digest", "keyframes"}`` -- the map folder relative to the checkpoint's
  folder, the fingerprint of the dataset it was built from and the digest of its keyframes
  (:func:`~pose2rgbd.placemap.keyframe_map.keyframes_digest`), both compared on load: a missing, moved or other map is
  refused naming both sides. What training writes (the run's keyframe map, or the map given with ``--map``).
- ``keyframes``: ``{"rgb" (N, S, S, 3) uint8, "depth" (N, S, S) float16 metres, "T_world_cam" (N, 4, 4),
  "frames" (N,)}`` -- the keyframes as the model sees them (:class:`~pose2rgbd.placemap.keyframe_view.SizedKeyframes`),
  read back as :class:`~pose2rgbd.placemap.keyframes.ArrayKeyframes`: a one-file bundle (``pose2rgbd export
  --bundle``) that renders exactly what the map-backed checkpoint renders. Checkpoints written before the map
  was named (the store as buffers ``kf_rgb``, ``kf_depth``, ...) are brought to this layout by :func:`migrate_store`.

A model with ``model.geometry fused`` (:mod:`~pose2rgbd.methods.hybrid.fused_input`) renders with the fused surface
of its keyframes, stored with them: a checkpoint naming a map reads it from ``<map>/fused/`` (``pose2rgbd map
fuse``'s layout) and records its digest (``place_map["fused"]``, compared on load); a bundle, or a model whose
surface is not its map's, carries it in ``fused``: ``{"vertices" (V, 3) float32, "triangles" (T, 3) int32,
"exposure" (N, 3, 2) float32 (absent: none), "meta" (JSON text)}``. A map given instead (``--map`` / ``engine.map``)
gives its own surface, its exposure gains indexed by its own keyframes.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pose2rgbd.errors import CheckpointError
from pose2rgbd.jsonio import json_text

if TYPE_CHECKING:
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.methods.hybrid.fused_input import FusedInput
    from pose2rgbd.placemap.fused import FusedGeometry
    from pose2rgbd.placemap.keyframe_view import SizedKeyframes
    from pose2rgbd.placemap.keyframes import Keyframes
    from pose2rgbd.placemap.place_map import PlaceMap


class HybridNet(Protocol):
    """What this module reads and sets of :class:`~pose2rgbd.methods.hybrid.net.HybridNet` (which calls it)."""

    keyframes: SizedKeyframes | None
    rot_weight_m: torch.Tensor
    fused_input: FusedInput | None

    @property
    def camera(self) -> PinholeCamera | None: ...

    def use_keyframes(self, keyframes: Keyframes) -> None: ...


PLACE_MAP = "place_map"
KEYFRAMES = "keyframes"
FUSED = "fused"
_OLD_STORE = ("kf_rgb", "kf_depth", "kf_T", "kf_source", "kf_pos", "kf_index")


def map_reference(pm: Any, checkpoint: Path) -> dict[str, Any]:
    """The ``place_map`` entry naming ``pm`` (a :class:`~pose2rgbd.placemap.PlaceMap`) from ``checkpoint``."""
    from pose2rgbd.placemap.keyframe_map import keyframes_digest

    rel = os.path.relpath(Path(pm.path).resolve(), Path(checkpoint).resolve().parent)
    return {"path": rel, "fingerprint": pm.fingerprint, "digest": keyframes_digest(pm.manifest), "keyframes": len(pm)}


def checkpoint_extra(model: HybridNet, path: Path) -> dict[str, Any]:
    """What a hybrid writes beside its weights (see the module docstring); nothing without keyframes."""
    from pose2rgbd.placemap import PlaceMap

    kf, fi = model.keyframes, model.fused_input
    if kf is None:
        return {}
    fused = {} if fi is None or fi.geometry is None else {FUSED: geometry_entry(fi.geometry)}
    if isinstance(kf.keyframes, PlaceMap):
        ref = map_reference(kf.keyframes, path)
        if fi is not None and fi.geometry is not None and fi.source == kf.keyframes.path:
            return {PLACE_MAP: {**ref, FUSED: fi.digest()}}  # the map's own fused geometry
        return {PLACE_MAP: ref, **fused}
    return {KEYFRAMES: bundle_entry(model), **fused}


def geometry_entry(geo: FusedGeometry) -> dict[str, torch.Tensor | str]:
    """The ``fused`` entry of a checkpoint holding ``geo`` (see the module docstring)."""
    out: dict[str, torch.Tensor | str] = {
        "vertices": torch.from_numpy(np.ascontiguousarray(geo.vertices, np.float32)),
        "triangles": torch.from_numpy(np.ascontiguousarray(geo.triangles, np.int32)),
        "meta": json_text(geo.meta),
    }
    if geo.exposure is not None:
        out["exposure"] = torch.from_numpy(np.ascontiguousarray(geo.exposure, np.float32))
    return out


def geometry_from_entry(entry: object, where: str) -> FusedGeometry:
    """The fused geometry a checkpoint's ``fused`` entry holds."""
    from pose2rgbd.placemap.fused import FusedGeometry

    v, t, e, meta = (entry.get(k) if isinstance(entry, dict) else None
                     for k in ("vertices", "triangles", "exposure", "meta"))  # fmt: skip
    if not (isinstance(v, torch.Tensor) and isinstance(t, torch.Tensor) and isinstance(meta, str)):
        raise CheckpointError(f"{where}: its fused geometry entry is damaged; train the model again")
    return FusedGeometry(v.numpy(), t.numpy(), json.loads(meta), e.numpy() if isinstance(e, torch.Tensor) else None)


def map_geometry(map_path: Path, where: str, digest: str) -> FusedGeometry:
    """The fused geometry stored with the place map ``map_path`` (``digest``: what the checkpoint ``where``
    recorded, compared; empty: a map given instead, its own surface)."""
    from pose2rgbd.placemap import MapError
    from pose2rgbd.placemap.fused import load_fused

    try:
        geo = load_fused(map_path)
    except MapError as e:
        raise CheckpointError(f"{where} renders with the fused geometry of its place map (geometry fused): {e}") from e
    if digest and geo.digest() != digest:
        raise CheckpointError(
            f"{where} was trained with the fused geometry of {map_path} of digest {digest[:16]}, but the map holds "
            f"another (digest {geo.digest()[:16]}: fused again since); serve the checkpoint with the map it was "
            "trained with, or a one-file bundle (`pose2rgbd export --bundle`), or train it again"
        )
    return geo


def bundle_entry(model: HybridNet) -> dict[str, torch.Tensor]:
    """Every keyframe of ``model`` as it sees them (its size and camera, float16 depth), for a one-file bundle."""
    kf = model.keyframes
    if kf is None:
        raise CheckpointError("the hybrid model has no keyframes to bundle")
    rows = np.arange(len(kf))[:, None]
    rgb, depth, T = kf.gather(rows)
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(rgb[:, 0])),
        "depth": torch.from_numpy(np.ascontiguousarray(depth[:, 0])),
        "T_world_cam": torch.from_numpy(np.ascontiguousarray(T[:, 0])),
        "frames": torch.from_numpy(np.asarray(kf.frames, np.int64).copy()),
    }


def bundle_keyframes(model: HybridNet) -> None:
    """Hold ``model``'s keyframes in memory, as it sees them (:func:`bundle_entry`): saved, the checkpoint then
    carries them (a one-file bundle) instead of naming their map."""
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    b = bundle_entry(model)
    cam = model.camera
    assert cam is not None  # a model with keyframes has its camera
    model.use_keyframes(
        ArrayKeyframes(b["rgb"].numpy(), b["depth"].numpy(), b["T_world_cam"].numpy(), cam,
                       frames=b["frames"].numpy(), rot_weight_m=float(model.rot_weight_m))
    )  # fmt: skip


def restore(
    model: HybridNet, extra: dict[str, Any], path: Path | None, place_map: str, dataset_fingerprint: str
) -> dict[str, Any]:
    """Give ``model`` the keyframes its checkpoint names or holds (``place_map``: a map of its training dataset,
    ``dataset_fingerprint``, instead); returns ``extra`` without the bundled keyframes. A checkpoint without
    either stays without."""
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    extra = dict(extra)
    bundled = extra.pop(KEYFRAMES, None)
    where = str(path) if path is not None else "<in-memory hybrid checkpoint>"
    if place_map:
        model.use_keyframes(_open_map(Path(place_map).expanduser(), where, None, dataset_fingerprint))
    elif bundled is not None:
        cam = model.camera
        if cam is None:
            raise CheckpointError(f"{where}: bundled keyframes, but no camera in the model")
        keyframes = ArrayKeyframes(
            bundled["rgb"].numpy(), bundled["depth"].numpy(), bundled["T_world_cam"].numpy(), cam,
            frames=bundled["frames"].numpy(), rot_weight_m=float(model.rot_weight_m),
        )  # fmt: skip
        model.use_keyframes(keyframes)
    elif extra.get(PLACE_MAP):
        ref = extra[PLACE_MAP]
        p = Path(str(ref.get("path", ""))).expanduser()
        if not p.is_absolute() and path is not None:
            p = path.parent / p
        model.use_keyframes(_open_map(p, where, ref, dataset_fingerprint))
    _restore_geometry(model, extra, where, given_map=bool(place_map))
    return extra


def _restore_geometry(model: HybridNet, extra: dict[str, object], where: str, *, given_map: bool) -> None:
    """Give a ``geometry fused`` model its surface: a map given instead has its own; else the checkpoint's
    ``fused`` entry, or the ``fused/`` of the map it names (checked by digest). Pops ``fused`` from ``extra``."""
    from pose2rgbd.placemap import PlaceMap

    fi, embedded = model.fused_input, extra.pop(FUSED, None)
    if fi is None or model.keyframes is None:
        return
    src = model.keyframes.keyframes
    if isinstance(src, PlaceMap) and (given_map or embedded is None):
        ref = extra.get(PLACE_MAP)
        digest = str(ref.get(FUSED, "")) if isinstance(ref, dict) and not given_map else ""
        fi.use(map_geometry(src.path, where, digest), source=src.path)
    elif embedded is not None:
        fi.use(geometry_from_entry(embedded, where))


def _open_map(p: Path, where: str, ref: dict[str, Any] | None, dataset_fingerprint: str) -> Any:
    """The place map ``p`` for the checkpoint ``where``, checked against ``ref`` (what the checkpoint recorded:
    dataset fingerprint and keyframes digest) or, for a map given instead, against the model's dataset."""
    from pose2rgbd.placemap import MapError, PlaceMap
    from pose2rgbd.placemap.keyframe_map import keyframes_digest
    from pose2rgbd.placemap.verify import MapDamagedError

    what = f"{where} reads its keyframes from the place map {p}"
    if ref:
        what += f" (recorded as {ref.get('path')} relative to the checkpoint)"
    fix = (
        "keep the map where it was, relative to the checkpoint (move them together), give the map with "
        "--map / engine.map, or serve a one-file bundle (`pose2rgbd export --bundle`)"
    )
    try:
        pm = PlaceMap(p, cache_keyframes=0)  # the model's keyframe view is the one cache
    except MapDamagedError:  # names the damaged file and the command that rebuilds it
        raise
    except MapError as e:
        raise CheckpointError(f"{what}: {e}. To serve it, {fix}") from e
    fingerprint = str(ref.get("fingerprint", "")) if ref else dataset_fingerprint
    if not ref:  # a map given instead of the checkpoint's: of the model's training dataset
        if fingerprint and pm.fingerprint and fingerprint != pm.fingerprint:
            raise CheckpointError(_not_of_the_training_dataset(pm, where, fingerprint))
    else:
        if fingerprint and pm.fingerprint and fingerprint != pm.fingerprint:
            raise CheckpointError(
                f"{what}, built from the dataset with fingerprint {fingerprint}, but {p} was built from another "
                f"dataset ({pm.fingerprint}); {fix}"
            )
        want, got = str(ref.get("digest", "")), keyframes_digest(pm.manifest)
        if want and want != got:
            raise CheckpointError(
                f"{what}, whose keyframes have digest {want[:16]}, but the map at {p} holds other keyframes (digest "
                f"{got[:16]}: rebuilt or replaced since); {fix}"
            )
    if not pm.has_depth:
        raise CheckpointError(
            f"{p}: the hybrid warps keyframes with their metric depth, and this map has none (built from a dataset "
            "without metric depth, or a localization-only map)"
        )
    return pm


def _not_of_the_training_dataset(pm: PlaceMap, where: str, fingerprint: str) -> str:
    """Why the place map ``pm``, given instead of the checkpoint's, cannot back the hybrid ``where`` trained on the
    dataset ``fingerprint`` (a merged map of several datasets, or a map of another dataset), and the map to give:
    one built from its own training dataset, named where the merged map lists it or the run's config.yaml does."""
    trained = _training_dataset(where, fingerprint)
    if pm.merged:
        leaves = pm.merged_datasets
        names = ", ".join(str(d.get("path") or d.get("name") or "?") for d in leaves)
        own = next((str(d.get("path") or "") for d in leaves if d.get("fingerprint") == fingerprint), "")
        trained = trained or own
        on = f"{trained}, fingerprint {fingerprint}" if trained else f"fingerprint {fingerprint}"
        why = (
            f"{pm.path} is a map merged from {len(leaves) or 'several'} datasets ({names}; fingerprint "
            f"{pm.fingerprint}): a map of another dataset than the one {where} was trained on ({on}"
            f"{', one of those merged' if own else ''}). A hybrid checkpoint is trained on one dataset and warps that "
            "dataset's keyframes, so a merged map of several datasets cannot back it"
        )
    else:
        built = pm.manifest.get("dataset", {}).get("path")
        why = (
            f"{pm.path} was built from another dataset (fingerprint {pm.fingerprint}{', ' + built if built else ''}) "
            f"than the one {where} was trained on (fingerprint {fingerprint}{', ' + trained if trained else ''}): a "
            "hybrid warps the keyframes of its own training dataset"
        )
    ds = shlex.quote(trained) if trained else "DATASET"
    which = "" if trained else f" (DATASET: the one of fingerprint {fingerprint})"
    return (
        f"{why}. Give a map built from the checkpoint's own training dataset, `pose2rgbd map build --dataset {ds} "
        f"--out MAP`{which}: to `pose2rgbd map link --checkpoint {shlex.quote(where)} --map MAP --out OUT.pt`, or to a "
        "render or localize node as its engine.map parameter"
    )


def _training_dataset(where: str, fingerprint: str) -> str:
    """The dataset a checkpoint was trained on, where the run folder it lies in says (its config.yaml's ``dataset``,
    with this ``fingerprint``), else empty."""
    from pose2rgbd.dataset.format import run_dataset

    dataset, recorded = run_dataset(where)
    return dataset if recorded == fingerprint else ""


def migrate_store(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint with the keyframe store as buffers (``kf_rgb``, ``kf_depth``, ``kf_T``, ``kf_index``, ...):
    the store moved into ``extra["keyframes"]`` (an empty one -- a linked checkpoint -- dropped); others unchanged."""
    sd = data.get("state_dict")
    if not isinstance(sd, dict) or "kf_T" not in sd:
        return data
    sd = dict(sd)
    store = {k: sd.pop(k) for k in _OLD_STORE if k in sd}
    extra = dict(data.get("extra") or {})
    if int(store["kf_T"].shape[0]) and KEYFRAMES not in extra and PLACE_MAP not in extra:
        extra[KEYFRAMES] = {
            "rgb": store["kf_rgb"],
            "depth": store["kf_depth"],
            "T_world_cam": store["kf_T"].double(),
            "frames": store.get("kf_index", torch.arange(int(store["kf_T"].shape[0]))),
        }
    return {**data, "state_dict": sd, "extra": extra}


def is_bundle(p: Path) -> bool:
    """Whether the file ``p`` is a checkpoint with its keyframes inside (``export --bundle``'s output; its header
    alone is read, the tensors mapped); False for anything else, readable or not."""
    import torch

    from pose2rgbd.models.checkpoint import holds_keyframes

    try:
        data = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        return isinstance(data, dict) and holds_keyframes(data)
    except Exception:  # not a checkpoint torch can map (whatever it raises for it): no bundle
        return False

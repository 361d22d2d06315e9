"""The fused geometry of the keyframes as the hybrid's input (``model.geometry fused``).

With ``geometry fused`` the hybrid fuses the depth of its keyframes (the training split at the model's size,
the keyframe store) into one surface at training start (:func:`pose2rgbd.map.fused.fuse_keyframes`: TSDF,
marching cubes, per-keyframe exposure fit) and keeps that surface -- a triangle mesh and the exposure gains --
as persistent buffers of :class:`FusedInput`, so it travels in every checkpoint like the store and serving
finds it there. For each query pose the training-free fused-geometry renderer
(:class:`~pose2rgbd.map.fused.render.FusedRenderer`) gives

* the **depth**: the surface ray-cast at the pose, which replaces the forward-warped depth wherever the ray meets
  the surface (one frame's sensor holes filled from the others, its noise averaged away);
* the **colour**: the keyframes that see each surface point (visibility against the surface and their own
  depth), exposure-compensated to the nearest keyframe and blended with unstructured-lumigraph weights, which
  replaces the warped colour wherever a keyframe sees the point.

Where the surface is missing (sky, beyond the fusion's depth limit, never seen) the forward-warped answer stays,
so the fill network gets one RGB-D image of the same kind as with ``geometry warp``: its ``valid`` channel
marks pixels with a surface or a warped point (their depth is refined by the learned scale), and pixels whose
colour no keyframe gave (``rgb_valid`` False) are the holes whose colour the network corrects.

Training: a query is a training frame, and the surface of every keyframe contains its own depth; the network
would learn to trust a surface far better than any unseen pose gets. So in training each query sees a surface
fused **without** its own stretch of the recording: the keyframes are cut into ``model.fused_folds`` contiguous
time blocks and a query is rendered from the surface (and the keyframes) of the other blocks, as a held-out time
block is at test time. These surfaces are fused once, on the first training forward, and never stored.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.map.format import MapError
from pose2rgbd.map.fused import ArrayKeyframes, FusedGeometry, FusionConfig, Keyframes, fuse_keyframes
from pose2rgbd.map.fused.render import FusedRenderer

log = logging.getLogger(__name__)

TRAIN_VIEW_CACHE_BYTES = 512 * 2**20  # training queries' fused views kept between epochs (3,600 at 128x128)
SETTINGS = ("voxel_size_m", "sdf_trunc_m", "depth_max_m", "median_depth_m")


class _Cache(dict[str, Any]):
    """Derived state (ray-casting scenes, keyframe views): rebuilt on demand, never copied nor pickled (an Open3D
    scene is neither), so a deep copy of the model (the render engine's prepared copy) starts empty."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Cache:
        return _Cache()

    def __reduce__(self) -> Any:
        return (_Cache, ())


class _MapView:
    """The keyframes of a place map attached to the model (:class:`~pose2rgbd.methods.hybrid.map_keyframes.
    MapKeyframes`, decoded at the model's size) as :class:`~pose2rgbd.map.keyframes.Keyframes`."""

    def __init__(self, mk: Any, camera: PinholeCamera) -> None:
        self.mk = mk
        self.T_world_cam = np.asarray(mk.map.T_world_cam, np.float64)
        self.poses: PoseSet = mk.poses
        self._camera = camera

    def __len__(self) -> int:
        return len(self.mk)

    def camera(self, i: int) -> PinholeCamera:
        return self._camera

    def rgb(self, i: int) -> np.ndarray:
        return np.asarray(self.mk.gather(np.array([[i]]))[0][0, 0])

    def depth(self, i: int) -> np.ndarray:
        return np.asarray(self.mk.gather(np.array([[i]]))[1][0, 0], np.float32)


def model_camera(model: Any) -> PinholeCamera:
    """The keyframes' camera at the model's size (from the model's intrinsics)."""
    S = int(model.config.size)
    K = model.kf_K.detach().cpu().numpy()
    return PinholeCamera(S, S, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))


def model_keyframes(model: Any) -> Keyframes:
    """The keyframes the model warps (its embedded store, or the attached place map's) as :class:`Keyframes`."""
    mk = model.map_keyframes
    if mk is not None:
        return _MapView(mk, model_camera(model))
    return ArrayKeyframes(
        model.kf_rgb.detach().cpu().numpy(),
        model.kf_depth.detach().cpu().numpy(),
        model.kf_T.detach().cpu().numpy(),
        model_camera(model),
        rot_weight_m=float(model.rot_weight_m),
    )


def fold_of_rows(source: np.ndarray, pos: np.ndarray, folds: int) -> np.ndarray:
    """``(N,)`` the time block (0..folds-1) of each keyframe: the keyframes in (source, position in time) order cut
    into ``folds`` contiguous blocks of equal count."""
    n = len(source)
    order = np.lexsort((np.asarray(pos), np.asarray(source)))
    fold = np.empty(n, np.int64)
    fold[order] = np.arange(n) * int(folds) // max(n, 1)
    return fold


def fold_of_queries(
    q_source: np.ndarray, q_pos: np.ndarray, source: np.ndarray, pos: np.ndarray, fold: np.ndarray
) -> np.ndarray:
    """``(B,)`` the time block of each query: that of the keyframe of its source nearest in time (-1: its source
    has no keyframe, the query is rendered from every keyframe)."""
    out = np.full(len(q_source), -1, np.int64)
    for b, (s, p) in enumerate(zip(np.asarray(q_source).tolist(), np.asarray(q_pos).tolist(), strict=True)):
        rows = np.flatnonzero(source == s)
        if len(rows):
            out[b] = fold[rows[np.argmin(np.abs(pos[rows] - p))]]
    return out


class FusedInput(torch.nn.Module):
    """The fused surface of the model's keyframes (persistent buffers) and its use as the warp's input (see the
    module docstring). ``neighbours``: keyframes that colour each point; ``folds``: time blocks left out in
    training (0 or 1: none, the surface of every keyframe)."""

    vertices: torch.Tensor
    triangles: torch.Tensor
    exposure: torch.Tensor
    settings: torch.Tensor

    def __init__(self, neighbours: int, folds: int) -> None:
        super().__init__()
        self.neighbours = int(neighbours)
        self.folds = int(folds)
        self.register_buffer("vertices", torch.zeros((0, 3), dtype=torch.float32))
        self.register_buffer("triangles", torch.zeros((0, 3), dtype=torch.int32))
        self.register_buffer("exposure", torch.zeros((0, 3, 2), dtype=torch.float32))
        self.register_buffer("settings", torch.zeros(len(SETTINGS), dtype=torch.float64))
        self.cache = _Cache()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Resize the buffers to the saved surface before the usual copy (a fresh model has none)."""
        for name in ("vertices", "triangles", "exposure"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != self._buffers[name].shape:  # type: ignore[union-attr]
                self._buffers[name] = torch.zeros_like(saved, device=self.settings.device)
        self.cache.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def built(self) -> bool:
        return bool(self.settings[0] > 0)

    def set_geometry(self, geo: FusedGeometry) -> None:
        """Keep ``geo``'s surface and exposure in the buffers."""
        dev = self.settings.device
        self._buffers["vertices"] = torch.as_tensor(np.asarray(geo.vertices, np.float32), device=dev)
        self._buffers["triangles"] = torch.as_tensor(np.asarray(geo.triangles, np.int32), device=dev)
        exp = np.zeros((0, 3, 2), np.float32) if geo.exposure is None else np.asarray(geo.exposure, np.float32)
        self._buffers["exposure"] = torch.as_tensor(exp, device=dev)
        with torch.no_grad():
            self.settings.copy_(torch.tensor([float(geo.meta[k]) for k in SETTINGS], dtype=torch.float64))
        self.cache.clear()

    def build(self, model: Any, *, progress: bool = False) -> FusedGeometry:
        """Fuse the model's keyframes (its store) and keep the surface; the geometry, with its build statistics."""
        kf = model_keyframes(model)
        try:
            geo = fuse_keyframes(kf, FusionConfig(), progress=progress)
        except MapError as e:  # Open3D missing, or no keyframe with depth
            raise ConfigError(f"model.geometry fused: {e}; or train with model.geometry warp") from e
        self.set_geometry(geo)
        m = geo.meta
        log.info("hybrid geometry fused: %d keyframes, %.3f m voxels, %d triangles (%.1f MiB in each checkpoint), "
                 "%.1f s", m["keyframes"], m["voxel_size_m"], m["triangles"], self.nbytes() / 2**20,
                 m["build_s"])  # fmt: skip
        return geo

    def nbytes(self) -> int:
        return sum(int(b.numel() * b.element_size()) for b in (self.vertices, self.triangles, self.exposure))

    def geometry(self) -> FusedGeometry:
        """The stored surface as a :class:`FusedGeometry` (its ray-casting scene built once, kept in the cache)."""
        geo = self.cache.get("geometry")
        if geo is None:
            meta = {k: float(v) for k, v in zip(SETTINGS, self.settings.tolist(), strict=True)}
            exp = self.exposure.detach().cpu().numpy()
            geo = FusedGeometry(self.vertices.detach().cpu().numpy(), self.triangles.detach().cpu().numpy(), meta,
                                exp if len(exp) else None)  # fmt: skip
            self.cache["geometry"] = geo
        return geo  # type: ignore[no-any-return]

    def _renderer(self, model: Any) -> FusedRenderer:
        """The renderer over every keyframe and the stored surface (rebuilt when the store changes)."""
        key = ("all", model.kf_T._version, model.kf_T.data_ptr(), model.n_keyframes, id(model.map_keyframes))
        hit = self.cache.get("renderer")
        if hit is None or hit[0] != key:
            geo = self.geometry()
            kf = model_keyframes(model)
            if geo.exposure is not None and len(geo.exposure) != len(kf):
                # an attached map indexes its keyframes its own way: the gains fitted per store row do not apply
                log.info("hybrid geometry: %d keyframes, exposure fitted for %d: colours as shot", len(kf),
                         len(geo.exposure))  # fmt: skip
                geo = dataclasses.replace(geo, exposure=None)  # the same surface and ray-casting scene
            hit = (key, FusedRenderer(kf, geo, neighbours=self.neighbours))
            self.cache["renderer"] = hit
        return hit[1]  # type: ignore[no-any-return]

    def _fold_renderers(self, model: Any) -> tuple[np.ndarray, list[FusedRenderer]]:
        """Per time block, the renderer over the other blocks' keyframes and their own surface (fused on first use,
        with the stored surface's voxel size and depth limit, exposure gains from the stored fit)."""
        key = ("folds", model.kf_T._version, model.kf_T.data_ptr(), model.n_keyframes, self.folds)
        hit = self.cache.get("folds")
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]  # type: ignore[no-any-return]
        source, pos = model.kf_source.cpu().numpy(), model.kf_pos.cpu().numpy()
        fold = fold_of_rows(source, pos, self.folds)
        full = self.geometry()
        cfg = FusionConfig(voxel_size=repr(full.voxel_size), depth_max=repr(float(full.meta["depth_max_m"])),
                           exposure=False)  # fmt: skip
        S = model_camera(model)
        rgb, depth, T = (model.kf_rgb.detach().cpu().numpy(), model.kf_depth.detach().cpu().numpy(),
                         model.kf_T.detach().cpu().numpy())  # fmt: skip
        renderers = []
        for f in range(self.folds):
            rows = np.flatnonzero(fold != f)
            kf = ArrayKeyframes(rgb, depth, T, S, rows=rows, rot_weight_m=float(model.rot_weight_m))
            geo = fuse_keyframes(kf, cfg)
            geo.exposure = None if full.exposure is None else full.exposure[rows]
            renderers.append(FusedRenderer(kf, geo, neighbours=self.neighbours))
        log.info("hybrid geometry: %d training surfaces fused, each without one time block of the keyframes",
                 self.folds)  # fmt: skip
        self.cache["folds"] = (key, fold, renderers)
        return fold, renderers

    def views(self, model: Any, T_world_cam: np.ndarray, exclude: tuple[np.ndarray, ...] | None) -> list[Any]:
        """The fused view (:class:`~pose2rgbd.map.fused.render.FusedView`, no fill) of each query pose."""
        cam = model_camera(model)
        T_all = np.asarray(T_world_cam, np.float64)
        if exclude is None:
            r = self._renderer(model)
            return [r.render(T, cam) for T in T_all]
        # training: a query's view depends only on its pose and its block, the same at every epoch; kept (up to
        # TRAIN_VIEW_CACHE_BYTES) so that later epochs do not ray-cast it again
        if self.folds > 1:
            fold, per_fold = self._fold_renderers(model)
            q_fold = fold_of_queries(exclude[0], exclude[1], model.kf_source.cpu().numpy(),
                                     model.kf_pos.cpu().numpy(), fold)  # fmt: skip
        else:
            per_fold, q_fold = [], np.full(len(T_all), -1)
        kept = self.cache.setdefault("train_views", {})
        key0 = ("folds", model.kf_T._version, model.kf_T.data_ptr(), model.n_keyframes, self.folds)
        if kept.get("key") != key0:
            kept.clear()
            kept.update(key=key0, bytes=0)
        out = []
        for f, T in zip(q_fold.tolist(), T_all, strict=True):
            k = (f, T.tobytes())
            view = kept.get(k)
            if view is None:
                view = (per_fold[f] if f >= 0 else self._renderer(model)).render(T, cam)
                size = view.rgb.nbytes + view.depth.nbytes + view.valid.nbytes + view.surface.nbytes
                if kept["bytes"] + size <= TRAIN_VIEW_CACHE_BYTES:
                    kept[k] = view
                    kept["bytes"] += size
            out.append(view)
        return out

    def combine(
        self,
        model: Any,
        T_world_cam: np.ndarray,
        exclude: tuple[np.ndarray, ...] | None,
        warped: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The warp's answer ``warped`` (:func:`~pose2rgbd.methods.hybrid.warp.warp_gathered`'s dict) with the fused
        surface's depth where a ray meets it and its colour where a keyframe sees the point; adds ``rgb_valid``
        (the pixels whose colour a keyframe gave) beside ``valid`` (the pixels with a depth: surface or warped)."""
        if not self.built:
            raise ConfigError(
                "the hybrid's fused geometry is empty: train it with `pose2rgbd train --method hybrid` (the recipe "
                "fuses the keyframes) or load a trained checkpoint"
            )
        views = self.views(model, T_world_cam, exclude)
        dev = warped["rgb"].device
        lo, hi = (float(v) for v in model.depth_range.tolist())
        depth = torch.from_numpy(np.stack([v.depth for v in views])[:, None]).to(dev)
        surface = torch.from_numpy(np.stack([v.surface for v in views])[:, None]).to(dev)
        coloured = torch.from_numpy(np.stack([v.valid for v in views])[:, None]).to(dev)
        rgb = torch.from_numpy(np.stack([v.rgb for v in views])).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        depth_n = 2.0 * (depth.clamp(lo, hi) - lo) / (hi - lo) - 1.0  # the warp's normalization (warp_gathered)
        return {
            **warped,
            "rgb": torch.where(coloured, rgb.to(warped["rgb"].dtype), warped["rgb"]),
            "depth": torch.where(surface, depth_n.to(warped["depth"].dtype), warped["depth"]),
            "valid": surface | warped["valid"],
            "rgb_valid": coloured | warped["valid"],
        }

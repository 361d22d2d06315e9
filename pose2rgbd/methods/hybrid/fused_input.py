"""The fused geometry of the keyframes as the hybrid's input (``model.geometry fused``).

With ``geometry fused`` the hybrid renders with the fused surface of the keyframes it warps -- one
:class:`~pose2rgbd.placemap.keyframes.Keyframes`, read at the model's size through its
:class:`~pose2rgbd.placemap.keyframe_view.SizedKeyframes` -- made by :mod:`pose2rgbd.placemap.fused` (TSDF, marching
cubes, per-keyframe exposure fit): a triangle mesh and exposure gains indexed like the keyframes. It is stored where the
keyframes are (:mod:`pose2rgbd.methods.hybrid.stored`): in ``<map>/fused/`` of the place map the checkpoint names, as
``pose2rgbd map fuse`` writes it (the recipe fuses the run's keyframe map there; a map given with ``model.map`` must
have been fused), or inside a one-file bundle beside its keyframes. For each query pose the training-free fused-geometry
renderer (:class:`~pose2rgbd.placemap.fused.render.FusedRenderer`) gives

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
time blocks (by the keyframes' source and position in time, :attr:`HybridNet.keyframe_times`) and a query is
rendered from the surface (and the keyframes) of the other blocks, as a held-out time block is at test time.
These surfaces are fused once, on the first training forward, and never stored.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.placemap.format import MapError
from pose2rgbd.placemap.fused import ArrayKeyframes, FusedGeometry, FusionConfig, Keyframes, fuse_keyframes
from pose2rgbd.placemap.fused.render import FusedRenderer, FusedView

if TYPE_CHECKING:
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.models.normalization import DepthNormalizer
    from pose2rgbd.placemap.keyframe_view import SizedKeyframes

log = logging.getLogger(__name__)

TRAIN_VIEW_CACHE_BYTES = 512 * 2**20  # training queries' fused views kept between epochs (3,600 at 128x128)


class HybridNet(Protocol):
    """What this module reads of :class:`~pose2rgbd.methods.hybrid.net.HybridNet` (which calls it)."""

    keyframes: SizedKeyframes | None
    keyframe_times: tuple[np.ndarray, np.ndarray] | None
    rot_weight_m: torch.Tensor

    @property
    def camera(self) -> PinholeCamera | None: ...

    @property
    def depth_normalizer(self) -> DepthNormalizer: ...


@dataclass
class _Derived:
    """What a :class:`FusedInput` derives from its surface and the model's keyframes (each kept with the keyframes
    it was made for): made again on demand, never copied nor pickled (an Open3D scene is neither)."""

    renderer: tuple[SizedKeyframes, FusedRenderer] | None = None
    folds: tuple[SizedKeyframes, np.ndarray, list[FusedRenderer]] | None = None
    views_of: SizedKeyframes | None = None  # the keyframes the training views were rendered from
    views: dict[tuple[int, bytes], FusedView] = field(default_factory=dict)
    views_bytes: int = 0


def _keyframes(model: HybridNet) -> Keyframes:
    """The keyframes the model warps, at its size (its sized view as :class:`Keyframes`)."""
    if model.keyframes is None:
        raise ConfigError(
            "the hybrid model has no keyframes: train it with `pose2rgbd train --method hybrid`, load a trained "
            "checkpoint (it names its place map), or give it a place map (engine.map)"
        )
    return model.keyframes.as_keyframes()


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


class FusedInput:
    """The fused surface of the model's keyframes and its use as the warp's input (see the module docstring).
    ``neighbours``: keyframes that colour each point; ``folds``: time blocks left out in training (0 or 1: none,
    the surface of every keyframe). ``geometry``: the surface (None until :meth:`use` or :meth:`build`);
    ``source``: the place map folder whose ``fused/`` it is (None: fused in memory, or from a bundle)."""

    def __init__(self, neighbours: int, folds: int) -> None:
        self.neighbours = int(neighbours)
        self.folds = int(folds)
        self.geometry: FusedGeometry | None = None
        self.source: Path | None = None
        self._digest = ""
        self.cache = _Derived()

    def __deepcopy__(self, memo: dict[int, object]) -> FusedInput:
        new = copy.copy(self)  # the surface is read-only: a prepared copy of the model shares it
        new.cache = _Derived()
        return new

    def __getstate__(self) -> dict[str, object]:
        state: dict[str, object] = {**self.__dict__, "cache": _Derived()}
        if self.geometry is not None:  # without its Open3D scene (built again on first use)
            g = self.geometry
            state["geometry"] = FusedGeometry(g.vertices, g.triangles, g.meta, g.exposure)
        return state

    @property
    def built(self) -> bool:
        return self.geometry is not None

    def use(self, geometry: FusedGeometry, source: Path | None = None) -> None:
        """Render with ``geometry`` (its exposure gains indexed like the model's keyframes)."""
        self.geometry, self.source, self._digest = geometry, source, ""
        self.cache = _Derived()

    def digest(self) -> str:
        """The surface's SHA-256 (:meth:`FusedGeometry.digest`), computed once."""
        assert self.geometry is not None
        if not self._digest:
            self._digest = self.geometry.digest()
        return self._digest

    def build(self, model: HybridNet, *, progress: bool = False) -> FusedGeometry:
        """Fuse the model's keyframes at its size in memory and render with the surface (keyframes held in
        memory; a place map's surface is fused into the map, ``pose2rgbd map fuse``, and read from there)."""
        try:
            geo = fuse_keyframes(_keyframes(model), FusionConfig(), progress=progress)
        except MapError as e:  # Open3D missing, or no keyframe with depth
            raise ConfigError(f"model.geometry fused: {e}; or train with model.geometry warp") from e
        self.use(geo)
        m = geo.meta
        log.info("hybrid geometry fused: %d keyframes, %.3f m voxels, %d triangles, %.1f s", m["keyframes"],
                 m["voxel_size_m"], m["triangles"], m["build_s"])  # fmt: skip
        return geo

    def _renderer(self, model: HybridNet) -> FusedRenderer:
        """The renderer over every keyframe and the surface (made again when the model's keyframes change)."""
        hit = self.cache.renderer
        if hit is None or hit[0] is not model.keyframes:
            geo = self.geometry
            assert geo is not None
            kf = _keyframes(model)
            if geo.exposure is not None and len(geo.exposure) != len(kf):
                raise ConfigError(
                    f"the hybrid's fused geometry has exposure gains for {len(geo.exposure)} keyframes and the model "
                    f"reads {len(kf)}: it was fused from other keyframes; fuse the map the model reads "
                    "(`pose2rgbd map fuse --overwrite`)"
                )
            assert model.keyframes is not None  # _keyframes checked
            hit = (model.keyframes, FusedRenderer(kf, geo, neighbours=self.neighbours))
            self.cache.renderer = hit
        return hit[1]

    def _fold_renderers(self, model: HybridNet) -> tuple[np.ndarray, list[FusedRenderer]]:
        """Per time block, the renderer over the other blocks' keyframes and their own surface (fused on first use,
        with the stored surface's voxel size and depth limit, exposure gains from the stored fit)."""
        hit = self.cache.folds
        if hit is not None and hit[0] is model.keyframes:
            return hit[1], hit[2]
        sized, times, full = model.keyframes, model.keyframe_times, self.geometry
        assert sized is not None and full is not None
        if times is None:
            raise ConfigError("training leaves time blocks out: use_keyframes(..., times=...) was not given them")
        fold = fold_of_rows(times[0], times[1], self.folds)
        cfg = FusionConfig(voxel_size=repr(full.voxel_size), depth_max=repr(float(full.meta["depth_max_m"])),
                           exposure=False)  # fmt: skip
        rgb, depth, T = sized.gather(np.arange(len(sized))[:, None])  # every keyframe at the model's size, once
        renderers = []
        for f in range(self.folds):
            rows = np.flatnonzero(fold != f)
            kf = ArrayKeyframes(rgb[:, 0], depth[:, 0], T[:, 0], sized.camera, rows=rows,
                                rot_weight_m=float(model.rot_weight_m))  # fmt: skip
            geo = fuse_keyframes(kf, cfg)
            geo.exposure = None if full.exposure is None else full.exposure[rows]
            renderers.append(FusedRenderer(kf, geo, neighbours=self.neighbours))
        log.info("hybrid geometry: %d training surfaces fused, each without one time block of the keyframes",
                 self.folds)  # fmt: skip
        self.cache.folds = (sized, fold, renderers)
        return fold, renderers

    def views(
        self, model: HybridNet, T_world_cam: np.ndarray, exclude: tuple[np.ndarray, ...] | None
    ) -> list[FusedView]:
        """The fused view (:class:`~pose2rgbd.placemap.fused.render.FusedView`, no fill) of each query pose."""
        cam = model.camera
        assert cam is not None  # a model with keyframes has its camera
        T_all = np.asarray(T_world_cam, np.float64)
        if exclude is None:
            r = self._renderer(model)
            return [r.render(T, cam) for T in T_all]
        # training: a query's view depends only on its pose and its block, the same at every epoch; kept (up to
        # TRAIN_VIEW_CACHE_BYTES) so that later epochs do not ray-cast it again
        if self.folds > 1:
            fold, per_fold = self._fold_renderers(model)
            assert model.keyframe_times is not None  # _fold_renderers checked
            q_fold = fold_of_queries(exclude[0], exclude[1], *model.keyframe_times, fold)
        else:
            per_fold, q_fold = [], np.full(len(T_all), -1)
        c = self.cache
        if c.views_of is not model.keyframes:
            c.views_of, c.views, c.views_bytes = model.keyframes, {}, 0
        out = []
        for f, T in zip(q_fold.tolist(), T_all, strict=True):
            k = (int(f), T.tobytes())
            view = c.views.get(k)
            if view is None:
                view = (per_fold[f] if f >= 0 else self._renderer(model)).render(T, cam)
                size = view.rgb.nbytes + view.depth.nbytes + view.valid.nbytes + view.surface.nbytes
                if c.views_bytes + size <= TRAIN_VIEW_CACHE_BYTES:
                    c.views[k] = view
                    c.views_bytes += size
            out.append(view)
        return out

    def combine(
        self,
        model: HybridNet,
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
        dn = model.depth_normalizer
        lo, hi = dn.min_m, dn.max_m
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
            "from_fallback": warped["from_fallback"] & ~surface,  # the surface's depth is no fallback's
        }

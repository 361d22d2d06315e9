"""The hybrid warp-and-fill network: keyframe store + forward warp + fill U-Net (+ a Pose2RGBD decoder, optional).

``forward(pose (B, D) normalized)`` -- the same input and output dict as
:class:`~pose2rgbd.methods.pose2rgbd.net.Pose2RGBDNet`, so the render engine, evaluation, the render node and the
experiments serve it unchanged:

1. the pose is denormalized to ``T_world_cam`` (the model's own pose normalization, as the engine gave it);
2. the ``neighbours`` keyframes nearest to it (:class:`~pose2rgbd.geometry.coverage.PoseSet` distance: metres +
   ``rot_weight_m`` x radians, the nearest-pose baseline's) are forward-splatted into it with their metric depth,
   z-buffered (:func:`~pose2rgbd.methods.hybrid.warp.warp_gathered`: a numba kernel on CPU, the torch
   :func:`~pose2rgbd.methods.hybrid.warp.splat_keyframes` on CUDA); pixels no keyframe reaches (holes) take
   the nearest keyframe's own pixel -- together this is exactly the reprojection baseline's answer (with
   ``behind_keyframe``, one more keyframe, the nearest behind the query camera, lands points only in the holes the
   others leave: :meth:`HybridNet.keyframes_to_warp`; with ``warp_colour`` / ``warp_depth`` blend, the defaults, a
   warped pixel's colour / depth is the weighted mean over the keyframes whose nearest point there lies on the
   winner's surface); with ``model.geometry fused`` the keyframes' fused surface gives the depth and colour
   wherever it has them (:mod:`~pose2rgbd.methods.hybrid.fused_input`);
3. with ``decoder`` (not the default) a Pose2RGBD Base decoder renders RGB-D from the pose alone;
4. a small U-Net takes [decoder RGB, decoder depth (zeros without a decoder), warped RGB, warped depth
   (normalized), valid, hits / k] and outputs a correction of the warped answer: added to its RGB
   (``rgb_correction``: everywhere, the default, or in the holes only), a log scale factor of its depth in
   metres where a keyframe point landed (everywhere with ``hole_depth`` learned). In the output, holes take
   the depth of the farther surface around them (``hole_depth`` background); with ``hole_rgb`` background that
   surface's colour is already in the warped RGB the network sees and corrects (:meth:`HybridNet._holes`, one
   pass of :func:`~pose2rgbd.methods.hybrid.hole_depth.background_fill_with_source`). Its last convolution starts
   at zero (``fill_init none``), so such an untrained model with the ``nearest`` hole rules and the
   ``nearest-surface`` colour and depth rules answers the reprojection baseline (up to sky, which is splatted instead
   of filled, and float16 depth) and training only has to learn the corrections; a new model's fill starts from the
   shipped pretrained weights instead.

Steps 3-4 are the network part (:mod:`pose2rgbd.methods.hybrid.network`), which exports to ONNX and runs in ONNX
Runtime when the engine serves the model with ``engine.backend onnxruntime``.

Outputs: ``"rgb"`` ``(B, 3, S, S)`` (about [-1, 1]; clipped when converted), ``"depth"`` ``(B, 1, S, S)``
normalized by the model's depth range, ``"confidence"`` ``(B, 1, S, S)`` = 1 where a keyframe point landed, 0 in
holes; and with a decoder, for training, ``"decoder_rgb"`` / ``"decoder_depth"``.

The keyframes (training frames only) are a :class:`~pose2rgbd.placemap.keyframes.Keyframes` seen through the
model's camera (:meth:`HybridNet.use_keyframes`), not in the ``state_dict``: a checkpoint names the place map they
come from, or holds them (a bundle), in its ``extra`` (:mod:`~pose2rgbd.methods.hybrid.stored`), opened again when
it is loaded; a copy prepared for serving reads the same ones (:meth:`HybridNet.shared_with_copies`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import COVERAGE_TREE_MIN, k_smallest
from pose2rgbd.geometry.encoding import encoding_dim
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw, rotation_angle_between
from pose2rgbd.methods.hybrid.config import HybridConfig
from pose2rgbd.methods.hybrid.fused_input import FusedInput
from pose2rgbd.methods.hybrid.hole_depth import background_colour, background_fill_with_source, border_holes
from pose2rgbd.methods.hybrid.network import (
    DECODER_CHANNELS,
    FILL_INPUTS,
    FillUNet,
    NetworkPart,
    OnnxNetworkPart,
    decoder_inputs,
    export_network_part,
)
from pose2rgbd.methods.hybrid.warp import BlendOptions, blend_weights, warp_gathered
from pose2rgbd.methods.pose2rgbd.net import Pose2RGBDNet
from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.cuda_graphs import GraphCache, autocast_key
from pose2rgbd.models.interfaces import PoseToImage
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer
from pose2rgbd.placemap.ground import ENU_UP, GroundPlane, keyframes_ground
from pose2rgbd.placemap.lru import LRU

if TYPE_CHECKING:
    from pose2rgbd.placemap.keyframe_view import SizedKeyframes
    from pose2rgbd.placemap.keyframes import Keyframes

log = logging.getLogger(__name__)


# on a map of COVERAGE_TREE_MIN keyframes or more the keyframe from behind is looked for first among this many
# nearest keyframes, the neighbours among them (HybridNet.keyframes_to_warp; a smaller map: one distance row)
BEHIND_CANDIDATES = 64


def _nearest_usable(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows per query of the distances ``d`` ``(B, N)`` (metres + rot_weight_m * radians; +inf
    where training excludes a keyframe), nearest first, ties to the lower row, and which of them are usable (finite)."""
    rows = k_smallest(d, k)
    return rows, np.isfinite(np.take_along_axis(d, rows, axis=1))


def _unfitted_border() -> torch.Tensor:
    """``hole_border_fit`` before :meth:`HybridNet.fit_hole_border`: the background rule, no errors measured."""
    return torch.tensor([0.0, float("nan"), float("nan"), float("nan")], dtype=torch.float64)


def ground_depth_from_terms(toward: torch.Tensor, above: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """:meth:`GroundPlane.depth` in torch on the device of ``rays`` ``(H, W, 3)`` float32, from the queries'
    :meth:`GroundPlane.camera_terms` already there (``toward`` ``(B, 3)``, ``above`` ``(B,)``): ``(B, 1, H, W)``.
    Products, not a matmul, which autocast would take to bfloat16; no copy from the host, what a CUDA graph can
    replay."""
    down = -(rays[..., :1] * toward[:, 0] + rays[..., 1:2] * toward[:, 1] + rays[..., 2:] * toward[:, 2])  # (H, W, B)
    z = torch.where((down > 1e-9) & (above > 0), above / down, torch.full_like(down, float("inf")))
    return z.permute(2, 0, 1)[:, None]


class KeyframesOnDevice:
    """Keyframes of ``sized`` copied to ``device`` as renders need them, as many kept as ``sized``'s host cache keeps
    and at most :attr:`MAX_KEPT` (:class:`~pose2rgbd.placemap.lru.LRU`; at 512x512 256 keyframes are 335 MB; training
    sizes the host cache to every keyframe). A copy of the model (``copy.deepcopy``: the engine's prepared model)
    starts without them; the model drops them when it gathers on the CPU again or takes other keyframes."""

    MAX_KEPT = 256

    def __init__(self, sized: SizedKeyframes, device: torch.device) -> None:
        self.sized, self.device = sized, device
        kept = min(sized.cache_keyframes, self.MAX_KEPT)
        self._cache: LRU[int, tuple[torch.Tensor, torch.Tensor]] = LRU(kept)

    def get(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keyframe ``i`` on the device: RGB uint8 (H, W, 3) and depth (H, W) metres (as ``sized.get``)."""

        def upload() -> tuple[torch.Tensor, torch.Tensor]:
            rgb, depth = self.sized.get(i)
            return torch.from_numpy(rgb).to(self.device), torch.from_numpy(depth).to(self.device)

        return self._cache.get(i, upload)

    def __deepcopy__(self, memo: dict[int, object]) -> None:
        return None


@dataclass(frozen=True)
class WarpInputs:
    """What the warp of one batch of queries takes, its tensors on the model's device (:meth:`HybridNet.warp_inputs`,
    then :meth:`HybridNet.warp_from`): the selected keyframes' RGB uint8 ``(B, k, S, S, 3)``, depth ``(B, k, S, S)``
    metres, keyframe -> query transforms float64 ``(B, k, 4, 4)``, which may be used ``(B, k)`` bool, their blend
    weights ``(B, k)`` float64 (None without a blend rule), and the settings read as Python values."""

    kf_rgb: torch.Tensor
    kf_depth: torch.Tensor
    T_query_kf: torch.Tensor
    usable: torch.Tensor
    weights: torch.Tensor | None
    fallback: int
    blend_tolerance: float
    blend_depth: bool
    blend_colour: bool
    nearest_depth: bool

    def tensors(self) -> list[torch.Tensor]:
        """The tensors, in the order :meth:`with_tensors` takes them back."""
        t = [self.kf_rgb, self.kf_depth, self.T_query_kf, self.usable]
        return t if self.weights is None else [*t, self.weights]

    def with_tensors(self, t: Sequence[torch.Tensor]) -> WarpInputs:
        """These settings with other tensors of the same layout (:meth:`tensors`' order)."""
        weights = None if self.weights is None else t[4]
        return replace(self, kf_rgb=t[0], kf_depth=t[1], T_query_kf=t[2], usable=t[3], weights=weights)

    def settings(self) -> tuple[object, ...]:
        """The Python values a captured warp bakes in (part of a CUDA graph's key)."""
        return (self.weights is not None, self.fallback, self.blend_tolerance, self.blend_depth, self.blend_colour,
                self.nearest_depth)  # fmt: skip


class HybridNet(PoseToImage, ModelBase):
    """Hybrid warp-and-fill model (see the module docstring). Build with :func:`build_model`."""

    kind = "hybrid"
    # served at bf16 on CPUs with native bf16 (engine.precision auto): the depth is the warped keyframes' (fp32)
    # times a learned scale, and the colour the keyframes' (fp32) plus the network's correction; measured against
    # fp32 on the real-data benchmark's sets (docs/serving.md, "bf16 and the correction everywhere"); 1.0-1.9x as
    # fast, by preset, size and threads
    serves_bf16_on_cpu = True
    # the forward pass selects keyframes in numpy and splats with data-dependent scatters: no ONNX graph of the
    # whole model; its network part (fill, and decoder where there is one) is one (serve_network_part_with_onnxruntime)
    onnx_unsupported = (
        "its forward pass looks up the nearest keyframes of the stored training frames and splats them with "
        "data-dependent scatters, which no ONNX graph expresses; serve the .pt checkpoint (engine.backend torch, "
        "or onnxruntime: its fill network (and decoder) then run in ONNX Runtime, the warp in torch), and to ship "
        "it as one file, `pose2rgbd export --bundle --checkpoint CKPT --out MODEL.pt` (its keyframes inside)"
    )
    # the warped keyframes (most of the render) are splatted without gradient: d(render)/d(pose) misses them
    pose_gradient_unsupported = (
        "its render is mostly training frames forward-splatted into the pose, which carries no gradient to the "
        "pose (a pose decoder, where there is one, alone would); refine with a Pose2RGBD or PoseGAN checkpoint of "
        "the same place"
    )

    warp_kernel = "auto"  # warp_gathered's kernel: auto (numba on CPU, torch on CUDA) | numba | torch
    kf_K: torch.Tensor
    rot_weight_m: torch.Tensor
    depth_range: torch.Tensor

    def __init__(
        self,
        config: HybridConfig,
        depth_normalizer: DepthNormalizer | None = None,
        pose_normalizer: PoseNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        # pose dimensions constant over the training poses (see set_pose_normalizer); registered first because
        # init_pose_normalization calls set_pose_normalizer
        self.pose_fixed: torch.Tensor
        self.register_buffer("pose_fixed", torch.zeros(encoding_dim(config.encoding), dtype=torch.bool))
        self.init_pose_normalization(config.encoding, pose_normalizer)
        # model.decoder false: no pose decoder; the fill network sees zeros in its decoder channels
        self.decoder = Pose2RGBDNet(config.decoder_config()) if config.decoder else None
        self.fill = FillUNet(FILL_INPUTS, config.fill_channels, config.fill_levels, config.fill_space_to_depth)
        dn = depth_normalizer or DepthNormalizer(0.0, 1.0)
        self.register_buffer("depth_range", torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64))
        self.register_buffer("kf_K", torch.eye(3, dtype=torch.float64))
        self.register_buffer("rot_weight_m", torch.tensor(10.0, dtype=torch.float64))
        self.keyframes: SizedKeyframes | None = None  # use_keyframes; not in the state_dict (see the module doc)
        self.keyframe_times: tuple[np.ndarray, np.ndarray] | None = None  # (source id, position in time): training
        self.network_runner: OnnxNetworkPart | None = None  # serve_network_part_with_onnxruntime
        # model.geometry fused: the keyframes' fused surface, the warp's input (stored with the keyframes: stored.py)
        fused = config.geometry == "fused"
        self.fused_input = FusedInput(config.fused_neighbours, config.fused_folds) if fused else None
        # model.hole_ground: the keyframes' ground plane, normal (3) and offset; NaN: none (fitted in use_keyframes)
        self.ground_plane: torch.Tensor
        self.register_buffer("ground_plane", torch.full((4,), float("nan"), dtype=torch.float64))
        # the model camera's pixel rays, made on first use, with the camera they were made for
        self._ground_rays: tuple[tuple[float, ...], torch.Tensor] | None = None
        self._keyframes_on_device: KeyframesOnDevice | None = None  # on a GPU: gather_keyframes
        self._ground_values: np.ndarray | None = None  # the ground_plane buffer on the CPU (read once: `ground`)
        self._depth_range_values: tuple[float, float] | None = None  # the depth_range buffer, likewise
        # model.hole_border auto: what fit_hole_border found for the place: [1 if its border holes take the nearest
        # keyframe's depth else 0, the background rule's error (m), the nearest keyframe's (m), pixels]; NaN: not fitted
        self.hole_border_fit: torch.Tensor
        self.register_buffer("hole_border_fit", _unfitted_border())
        self._border_chosen: float | None = None  # hole_border_fit[0] on the CPU (read once: `hole_border_rule`)
        self._graphs: GraphCache | None = None  # use_cuda_graphs: the render's GPU work captured per batch size
        self._graph_state: tuple[object, ...] | None = None  # what the graphs were captured with (_state_of_graphs)

    # -- keyframes ------------------------------------------------------------------------------------------
    @property
    def n_keyframes(self) -> int:
        """How many keyframes the model warps (0 before :meth:`use_keyframes`)."""
        return 0 if self.keyframes is None else len(self.keyframes)

    @property
    def camera(self) -> PinholeCamera | None:
        """The camera the model renders (its training camera at its size), None before it is known."""
        K = self.kf_K.detach().cpu().numpy()
        if K[2, 2] != 1.0 or K[0, 0] == 1.0:  # the identity of a model that has not seen a camera
            return None
        S = int(self.config.size)
        return PinholeCamera(S, S, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    def use_keyframes(
        self,
        keyframes: Keyframes,
        *,
        camera: PinholeCamera | None = None,
        rot_weight_m: float | None = None,
        times: tuple[np.ndarray, np.ndarray] | None = None,
        cache_keyframes: int = 256,
    ) -> None:
        """Warp ``keyframes`` (a :class:`~pose2rgbd.placemap.PlaceMap`, or
        :class:`~pose2rgbd.placemap.keyframes.ArrayKeyframes`) from now on, seen through the model's camera at its size
        (:class:`~pose2rgbd.placemap.keyframe_view.SizedKeyframes`: decoded when a render needs them,
        ``cache_keyframes`` kept). ``camera`` (at the model's size) and ``rot_weight_m`` (metres per radian of the
        nearest-keyframe distance) are set when given (training), else the model's own are kept (a trained model: the
        nearest keyframes are found with the weight it was trained with, on the keyframes' own pose index). ``times``:
        per keyframe its source id and position in time within the source, for the training exclusion
        (:meth:`select_keyframes`)."""
        from pose2rgbd.placemap.keyframe_view import SizedKeyframes

        S = int(self.config.size)
        if camera is not None:
            if (camera.width, camera.height) != (S, S):
                raise ConfigError(f"keyframe camera is {camera.width}x{camera.height}, the model renders {S}x{S}")
            with torch.no_grad():
                self.kf_K.copy_(torch.as_tensor(np.asarray(camera.K, dtype=np.float64)))
        if rot_weight_m is not None:
            with torch.no_grad():
                self.rot_weight_m.fill_(float(rot_weight_m))
        cam = self.camera
        if cam is None:
            raise ConfigError("the hybrid model has no camera yet: give use_keyframes the training camera")
        if len(keyframes) == 0:
            raise ConfigError("the hybrid model needs at least one keyframe")
        if times is not None and any(len(t) != len(keyframes) for t in times):
            raise ConfigError(f"keyframe times: {len(keyframes)} keyframes, {[len(t) for t in times]} entries")
        self.keyframes = SizedKeyframes(
            keyframes, cam, rot_weight_m=float(self.rot_weight_m), depth_dtype=np.float16,
            cache_keyframes=cache_keyframes,
        )  # fmt: skip
        self.keyframe_times = None if times is None else tuple(np.asarray(t, np.int64) for t in times)  # type: ignore[assignment]
        if camera is not None:  # a new model's keyframes (training): the place's ground, kept in the state_dict
            self._fit_ground(keyframes)
        self._ground_rays = None
        self._keyframes_on_device = None

    def _fit_ground(self, keyframes: Keyframes) -> None:
        """``model.hole_ground``: fit the keyframes' ground plane (:func:`~pose2rgbd.placemap.ground.keyframes_ground`;
        up is the world's z for a place map of a geo-referenced dataset)
        into the ``ground_plane`` buffer (NaN: none), so that a checkpoint and its bundle, and every later load,
        use the same plane without fitting again."""
        with torch.no_grad():
            self.ground_plane.fill_(float("nan"))
        self._ground_values = None
        if not (self.config.hole_ground and self.config.hole_depth == "background"):
            return
        from pose2rgbd.placemap.place_map import PlaceMap

        datum = keyframes.datum if isinstance(keyframes, PlaceMap) else None  # geo-referenced: ENU's up in the world
        g = keyframes_ground(keyframes, up=None if datum is None else datum.T_world_enu[:3, :3] @ ENU_UP)
        if g is None:
            log.info("hybrid: no ground plane under the keyframes' cameras; holes keep the background rule alone")
            return
        with torch.no_grad():
            self.ground_plane.copy_(torch.tensor([*g.normal, g.offset], dtype=torch.float64))
        log.info(
            "hybrid: ground plane %.2f m under the keyframes' cameras (median), %.0f %% of their sampled points on it",
            float(np.median(g.height(np.asarray(keyframes.T_world_cam)[:, :3, 3]))), 100 * g.inliers,
        )  # fmt: skip

    @property
    def ground(self) -> GroundPlane | None:
        """The keyframes' ground plane the holes' depth is bounded by (``model.hole_ground``), None without one."""
        if self._ground_values is None:  # read once, not every forward (a device sync where the model is on a GPU)
            self._ground_values = self.ground_plane.detach().cpu().numpy().copy()
        g = self._ground_values
        if not (self.config.hole_ground and self.config.hole_depth == "background") or not np.isfinite(g).all():
            return None
        return GroundPlane(g[:3].copy(), float(g[3]), tolerance_m=0.0, inliers=float("nan"))

    def shared_with_copies(self) -> tuple[object, ...]:
        """A copy prepared for serving reads the same keyframes, through the same cache (read-only, thread-safe)."""
        return () if self.keyframes is None else (self.keyframes,)

    def set_keyframes(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        T_world_cam: np.ndarray,
        camera: PinholeCamera,
        *,
        source_id: np.ndarray,
        seq_pos: np.ndarray,
        index: np.ndarray,
        rot_weight_m: float,
    ) -> None:
        """:meth:`use_keyframes` of arrays (:class:`~pose2rgbd.placemap.keyframes.ArrayKeyframes`): ``rgb`` ``(N, S, S,
        3)`` uint8, ``depth`` ``(N, S, S)`` metres (NaN invalid, +inf sky), poses ``(N, 4, 4)``, the camera at the
        model's size, per frame its source id, position in time within the source and dataset row."""
        from pose2rgbd.placemap.keyframes import ArrayKeyframes

        kf = ArrayKeyframes(np.asarray(rgb, np.uint8), np.asarray(depth, np.float32), T_world_cam, camera,
                            frames=np.asarray(index, np.int64), rot_weight_m=rot_weight_m)  # fmt: skip
        self.use_keyframes(kf, camera=camera, rot_weight_m=rot_weight_m, times=(source_id, seq_pos),
                           cache_keyframes=len(kf))  # fmt: skip

    def set_pose_normalizer(self, normalizer: PoseNormalizer) -> None:
        """Set the pose normalization, widening every dimension that is constant over the training poses by 1
        unit each side (marked in ``pose_fixed``). The warp recovers the query pose from the normalized input,
        and a zero-span dimension normalizes to 0 whatever the query (a flight at one altitude would be warped
        at that altitude); the decoder keeps seeing 0 there (``forward`` masks it), as it did in training."""
        fixed = ~(normalizer.span > 0)
        if fixed.any():
            normalizer = PoseNormalizer(
                normalizer.kind,
                np.where(fixed, normalizer.minimum - 1.0, normalizer.minimum),
                np.where(fixed, normalizer.maximum + 1.0, normalizer.maximum),
            )
        super().set_pose_normalizer(normalizer)
        self.pose_fixed.copy_(torch.from_numpy(fixed))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before pose_fixed existed: no dimension was widened
        state_dict.setdefault(prefix + "pose_fixed", torch.zeros_like(self.pose_fixed))
        # ... before ground_plane existed: no ground (their config has hole_ground false: FAMILY.migrate)
        state_dict.setdefault(prefix + "ground_plane", torch.full_like(self.ground_plane, float("nan")))
        # ... before hole_border existed: the background rule (their config has hole_border background: migrate)
        state_dict.setdefault(prefix + "hole_border_fit", _unfitted_border())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ground_values = None  # the plane may have changed: read the buffer again
        self._depth_range_values = None  # ... and the depth range
        self._border_chosen = None

    def select_keyframes(
        self, T_world_cam: np.ndarray, exclude: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The store rows of the ``neighbours`` keyframes nearest each query ``(B, 4, 4)``, nearest first, and
        which of them may be used ``(B, k)`` bool. ``exclude = (source_id (B,), seq_pos (B,), window (B,))``
        removes, per query, the keyframes of its source within ``window`` frames of it (training)."""
        kf = self._keyframes_to_search(exclude)
        k = min(int(self.config.neighbours), len(kf))
        if exclude is None:
            rows = kf.nearest(T_world_cam, k)
            return rows, np.ones(rows.shape, bool)
        return _nearest_usable(self._excluded(kf.poses.distances(T_world_cam), exclude), k)

    def _keyframes_to_search(self, exclude: object | None) -> SizedKeyframes:
        """The keyframes, or a ConfigError naming what is missing: none at all, or (``exclude`` given: training)
        their times."""
        kf = self.keyframes
        if kf is None:
            raise ConfigError(
                "the hybrid model has no keyframes: train it with `pose2rgbd train --method hybrid`, load a trained "
                "checkpoint (it names its place map), or give it a place map (engine.map)"
            )
        if exclude is not None and self.keyframe_times is None:
            raise ConfigError("training excludes neighbours in time: use_keyframes(..., times=...) was not given them")
        return kf

    def _excluded(self, d: np.ndarray, exclude: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """``d`` (B, N) with inf where training excludes keyframe n from query b: ``exclude = (source_id (B,),
        seq_pos (B,), window (B,))``, the keyframes of the query's source within ``window`` frames of it."""
        assert self.keyframe_times is not None  # select_keyframes checked
        src, pos = self.keyframe_times
        q_src, q_pos, window = (np.asarray(a, dtype=np.int64).reshape(-1, 1) for a in exclude)
        return np.where((src[None] == q_src) & (np.abs(pos[None] - q_pos) <= window), np.inf, d)

    def keyframes_to_warp(
        self, T_world_cam: np.ndarray, exclude: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """What the warp splats for each query ``(B, 4, 4)``: ``(rows (B, k'), usable (B, k'), fallback)``, the
        :meth:`select_keyframes` neighbours, then with ``behind_keyframe`` one fallback (``fallback`` 1) that fills
        only their holes: the nearest keyframe, by the same pose distance and ``exclude``, whose camera centre lies
        behind the query camera's image plane (unusable where none does).

        One search answers both: below :data:`~pose2rgbd.geometry.coverage.COVERAGE_TREE_MIN` keyframes (and in
        training, which excludes by time) one row of distances per query, from which the neighbours and the
        keyframe from behind are both taken; a larger map asks its k-d tree once for the nearest
        :data:`BEHIND_CANDIDATES` (the neighbours are the first of them) and scans every keyframe only where none of
        those is behind."""
        if not self.config.behind_keyframe:
            rows, usable = self.select_keyframes(T_world_cam, exclude)
            return rows, usable, 0
        kf = self._keyframes_to_search(exclude)
        T = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
        k = min(int(self.config.neighbours), len(kf))
        centres = np.asarray(kf.T_world_cam, np.float64)[:, :3, 3]  # (N, 3)
        behind = np.zeros((len(T), 1), np.int64)
        ok = np.zeros((len(T), 1), bool)
        Q = matrix_to_quat_xyzw(T[:, :3, :3])  # once for every distance below
        if exclude is None and len(kf) >= COVERAGE_TREE_MIN:
            cand = kf.poses.nearest(T, min(len(kf), max(k, BEHIND_CANDIDATES)), quat_xyzw=Q)  # nearest first
            rows, usable = cand[:, :k], np.ones((len(T), k), bool)
            along = np.einsum("bmk,bk->bm", centres[cand] - T[:, None, :3, 3], T[:, :3, 2])
            good = (along < 0.0) & ~(cand[:, :, None] == rows[:, None, :]).any(axis=2)
            found = good.any(axis=1)
            behind[found, 0] = cand[found, good[found].argmax(axis=1)]
            ok[found, 0] = True
            todo = np.flatnonzero(~found)
            d = kf.poses.distances(T[todo], Q[todo]) if len(todo) else None
        else:
            d = kf.poses.distances(T, Q)  # (B, N): metres + rot_weight_m * radians
            if exclude is not None:
                d = self._excluded(d, exclude)
            rows, usable = _nearest_usable(d, k)
            todo = np.arange(len(T))
        if d is not None:
            Tt = T[todo]
            along = np.einsum("bnk,bk->bn", centres[None] - Tt[:, None, :3, 3], Tt[:, :3, 2])  # along each query's z
            d = np.where(along < 0.0, d, np.inf)
            np.put_along_axis(d, rows[todo], np.inf, axis=1)  # not one of the neighbours again
            j = np.argmin(d, axis=1)
            behind[todo, 0] = j
            ok[todo, 0] = np.isfinite(d[np.arange(len(todo)), j])
        return np.concatenate([rows, behind], 1), np.concatenate([usable, ok], 1), 1

    # -- what the checkpoint keeps beside the weights (pose2rgbd.methods.hybrid.stored) -----------------------
    def checkpoint_extra(self, path: Path) -> dict[str, Any]:
        """The place map the keyframes come from (relative to ``path``, with its digest), or the keyframes."""
        from pose2rgbd.methods.hybrid.stored import checkpoint_extra

        return checkpoint_extra(self, path)

    def restore_extra(
        self, extra: dict[str, Any], path: Path | None, *, place_map: str = "", dataset_fingerprint: str = ""
    ) -> dict[str, Any]:
        """Open the keyframes the checkpoint names (checked) or holds, or ``place_map`` instead."""
        from pose2rgbd.methods.hybrid.stored import restore

        return restore(self, extra, path, place_map, dataset_fingerprint)

    # -- depth range ---------------------------------------------------------------------------------------
    @property
    def depth_normalizer(self) -> DepthNormalizer:
        # read from the buffer once, not at each of the forward's several uses: on a GPU each read is a wait for
        # every kernel queued before it; set_depth_normalizer and a state dict's load read it again
        if self._depth_range_values is None:
            lo, hi = (float(v) for v in self.depth_range.tolist())
            self._depth_range_values = (lo, hi)
        return DepthNormalizer(*self._depth_range_values)

    def set_depth_normalizer(self, dn: DepthNormalizer) -> None:
        self.depth_range.copy_(torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64))
        self._depth_range_values = None
        if self.decoder is not None:
            self.decoder.set_depth_normalizer(dn)

    # -- serving transforms (PoseToImage) --------------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        return (int(self.config.size), int(self.config.size))

    @property
    def has_rgb(self) -> bool:
        return True

    @property
    def has_depth(self) -> bool:
        return True

    @property
    def oob_dims(self) -> slice:
        """Without a decoder no network here sees the pose, so the out-of-bounds flag checks the position only (the
        box of the keyframes' positions, widened by the same metres on every side: the one rule,
        :meth:`~pose2rgbd.models.normalization.PoseNormalizer.margins`): the warp renders any view direction from
        the keyframes that see it, and the box of the encoded rotation misleads -- a camera looking straight down has
        qw near 0 for every heading, so a training box of a survey flight is a sliver of qw. How near the keyframes
        a view is, position and angle, is the coverage the engine reports with each render. With a decoder (a
        network that takes the normalized pose) the rotation counts too, widened by at least a few degrees."""
        return slice(None) if self.decoder is not None else slice(0, 3)

    @property
    def depth_range_m(self) -> tuple[float, float] | None:
        dn = self.depth_normalizer
        return (dn.min_m, dn.max_m)

    @property
    def confidence_is_seen(self) -> bool:
        """The confidence is ``valid``: 1 where a keyframe's point (or the fused surface) landed, 0 where filled."""
        return True

    def depth_to_metres(self, depth: torch.Tensor) -> torch.Tensor:
        return self.depth_normalizer.denormalize(depth)  # type: ignore[no-any-return]

    # -- forward -------------------------------------------------------------------------------------------
    def _poses(self, pose: torch.Tensor) -> np.ndarray:
        """``(B, 4, 4)`` float64 poses from the normalized network input (non-finite rows -> identity)."""
        T: np.ndarray = self.pose_normalizer.denormalize(pose.detach().float().cpu().numpy())
        bad = ~np.isfinite(T).all(axis=(1, 2))
        T[bad] = np.eye(4)
        return T

    def gather_keyframes(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keyframes ``rows`` (B, k) on the model's device: RGB uint8 (B, k, S, S, 3), depth float16 metres
        (B, k, S, S), T_world_cam float64 (B, k, 4, 4) (decoded through the LRU of :attr:`keyframes`)."""
        kfs = self.keyframes
        assert kfs is not None
        dev = self.kf_K.device
        if dev.type == "cpu":
            self._keyframes_on_device = None  # moved back from a GPU: its copies go
            rgb, depth, T = kfs.gather(rows)
            return torch.from_numpy(rgb), torch.from_numpy(depth), torch.from_numpy(T)
        return self.gather_keyframes_on(rows, dev)

    def gather_keyframes_on(
        self, rows: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`gather_keyframes` from the keyframes kept on ``device`` (:class:`KeyframesOnDevice`): on a GPU each
        keyframe crosses once and stays there, and a render gathers its keyframes on the device instead of stacking
        them on the host and copying them every time."""
        kfs = self.keyframes
        assert kfs is not None
        on_dev = self._keyframes_on_device
        if on_dev is None or on_dev.sized is not kfs or on_dev.device != device:
            on_dev = self._keyframes_on_device = KeyframesOnDevice(kfs, device)
        r = np.asarray(rows, np.int64)
        uniq, inv = np.unique(r, return_inverse=True)
        got = [on_dev.get(int(i)) for i in uniq]
        at = torch.from_numpy(inv.reshape(r.shape)).to(device)
        kf_T = torch.from_numpy(np.asarray(kfs.T_world_cam, np.float64)[r]).to(device)
        return torch.stack([g[0] for g in got])[at], torch.stack([g[1] for g in got])[at], kf_T

    def warp(
        self,
        T_world_cam: np.ndarray,
        exclude: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        *,
        nearest_depth: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """The reprojection answer for the query poses: ``rgb`` ``(B, 3, S, S)`` in [-1, 1] and ``depth``
        ``(B, 1, S, S)`` normalized (holes filled from the nearest usable keyframe; NaN -> 1), ``valid``, ``hits``
        and ``from_fallback`` ``(B, 1, S, S)``, and ``nearest_depth`` where asked (None: where
        :attr:`border_takes_nearest` needs it; :func:`~pose2rgbd.methods.hybrid.warp.warp_gathered`)."""
        w = self.warp_from(self.warp_inputs(T_world_cam, exclude, nearest_depth=nearest_depth))
        if self.fused_input is None:
            return w
        with torch.autocast(self.kf_K.device.type, enabled=False):  # in float32, as the warp
            return self.fused_input.combine(self, T_world_cam, exclude, w)

    def warp_inputs(
        self,
        T_world_cam: np.ndarray,
        exclude: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        *,
        nearest_depth: bool | None = None,
    ) -> WarpInputs:
        """The host's part of :meth:`warp`: the keyframes selected for the queries ``(B, 4, 4)`` and gathered on the
        model's device, their transforms into each query (float64, computed on the host: an inverse on a GPU waits
        for its error check) and the blend weights (:class:`WarpInputs`)."""
        rows, usable, fallback = self.keyframes_to_warp(T_world_cam, exclude)
        dev = self.kf_K.device
        kf_rgb, kf_depth, _ = self.gather_keyframes(rows)
        assert self.keyframes is not None  # keyframes_to_warp checked
        kf_T = torch.from_numpy(np.asarray(self.keyframes.T_world_cam, np.float64)[np.asarray(rows, np.int64)])
        T_q = torch.linalg.inv(torch.from_numpy(np.asarray(T_world_cam, dtype=np.float64)))
        blend = self.blend_options(T_world_cam, rows)
        weights = blend["weights"]
        return WarpInputs(
            kf_rgb=kf_rgb,
            kf_depth=kf_depth,
            T_query_kf=(T_q[:, None] @ kf_T).to(dev),
            usable=torch.from_numpy(usable).to(dev),
            weights=None if weights is None else weights.to(dev, torch.float64),
            fallback=int(fallback),
            blend_tolerance=blend["blend_tolerance"],
            blend_depth=blend["blend_depth"],
            blend_colour=blend["blend_colour"],
            nearest_depth=self.border_takes_nearest if nearest_depth is None else bool(nearest_depth),
        )

    def warp_from(self, inputs: WarpInputs) -> dict[str, torch.Tensor]:
        """The device's part of :meth:`warp` (before the fused geometry's): the keyframes of ``inputs`` splatted
        into the queries (:func:`~pose2rgbd.methods.hybrid.warp.warp_gathered`), in float32 whatever autocast is
        in force. On a GPU it waits for nothing on the host: a CUDA graph can replay it."""
        dn = self.depth_normalizer
        with torch.autocast(self.kf_K.device.type, enabled=False):
            return warp_gathered(
                inputs.kf_rgb,
                inputs.kf_depth,
                inputs.T_query_kf,
                self.kf_K,
                inputs.usable,
                depth_min_m=dn.min_m,
                depth_max_m=dn.max_m,
                kernel=self.warp_kernel,
                fallback=inputs.fallback,
                nearest_depth=inputs.nearest_depth,
                blend_tolerance=inputs.blend_tolerance,
                weights=inputs.weights,
                blend_depth=inputs.blend_depth,
                blend_colour=inputs.blend_colour,
            )

    def blend_options(self, T_world_cam: np.ndarray, rows: np.ndarray) -> BlendOptions:
        """The blend rules' arguments of :func:`~pose2rgbd.methods.hybrid.warp.warp_gathered` given the queries
        ``T_world_cam`` and their selected keyframes ``rows``: with ``warp_colour`` or ``warp_depth`` blend the
        tolerance, the weights and which of the two is blended; with both nearest-surface none (the winner's colour
        and depth)."""
        c = self.config
        colour, depth = c.warp_colour == "blend", c.warp_depth == "blend"
        if not (colour or depth):
            return BlendOptions(blend_tolerance=0.0, weights=None, blend_depth=False, blend_colour=False)
        weights = torch.from_numpy(self._blend_weights(T_world_cam, rows))
        return BlendOptions(blend_tolerance=float(c.blend_tolerance), weights=weights, blend_depth=depth,
                            blend_colour=colour)  # fmt: skip

    def _blend_weights(self, T_world_cam: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``(B, k)`` blending weights of the selected keyframes ``rows``: 1 / their pose distance to each query
        (the distance the selection ranks by: metres + the rotation weight times radians)."""
        assert self.keyframes is not None
        T = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
        Tk = np.asarray(self.keyframes.T_world_cam, np.float64)[np.asarray(rows, np.int64)]  # (B, k, 4, 4)
        dt = np.linalg.norm(Tk[..., :3, 3] - T[:, None, :3, 3], axis=-1)
        angle = rotation_angle_between(T[:, None, :3, :3], Tk[..., :3, :3])
        return blend_weights(dt + self.keyframes.poses.rot_weight_m * angle)

    @property
    def hole_border_rule(self) -> str:
        """The depth of the holes that reach the image's border under ``hole_depth background``: ``background``
        or ``nearest`` (``model.hole_border``; ``auto``: what :meth:`fit_hole_border` chose for the place)."""
        if self.config.hole_border != "auto":
            return self.config.hole_border
        if self._border_chosen is None:  # read once, not every forward (a device sync where the model is on a GPU)
            self._border_chosen = float(self.hole_border_fit[0])
        return "nearest" if self._border_chosen > 0.5 else "background"

    @property
    def border_takes_nearest(self) -> bool:
        """Whether what the neighbours leave open at the image's border takes the nearest keyframe's depth
        (``hole_depth background`` and :attr:`hole_border_rule` nearest)."""
        return self.config.hole_depth == "background" and self.hole_border_rule == "nearest"

    def fit_hole_border(self, *, samples: int = 96, min_pixels: int = 2000) -> dict[str, float] | None:
        """``model.hole_border auto``: choose the depth of what the neighbours leave open at the image's border
        (:meth:`_open_border`) for this place from its own keyframes, up to ``samples`` of them spread over the
        store, each warped from the others with its time window (``model.exclude_window``) left out, as a held-out
        view is: the nearest keyframe's own depth there, or what the model gives otherwise (the background rule in
        the holes, the keyframe from behind's depth where it landed), whichever has the lower mean absolute error
        against the keyframe's own depth on those pixels. Kept with both errors in the ``hole_border_fit`` buffer
        (the checkpoint); the model's own answer where fewer than ``min_pixels`` such pixels were seen (the errors
        NaN where none was). Returns the two errors (metres; ``background``: the model's own answer) and the pixel
        count, None where nothing is chosen (another setting, or no keyframe times: only training gives them)."""
        with torch.no_grad():
            self.hole_border_fit.copy_(_unfitted_border())
        self._border_chosen = None
        c, kf = self.config, self.keyframes
        if c.hole_depth != "background" or c.hole_border != "auto" or kf is None or self.keyframe_times is None:
            return None
        src, pos = self.keyframe_times
        dn = self.depth_normalizer
        pick = np.unique(np.linspace(0, len(kf) - 1, min(len(kf), samples)).round().astype(np.int64))
        sums = {"background": 0.0, "nearest": 0.0}
        count = 0
        for s in range(0, len(pick), 16):
            rows = pick[s : s + 16]
            T = np.asarray(kf.T_world_cam, np.float64)[rows]
            exclude = (src[rows], pos[rows], np.full(len(rows), int(c.exclude_window)))
            with torch.no_grad():
                w = self.warp(T, exclude, nearest_depth=True)
                background = self._holes(w, self._ground_depth_of(T), None)[1]
                truth = self.gather_keyframes(rows[:, None])[1][:, :1].float()  # metres; NaN invalid, +inf sky
            assert background is not None  # hole_depth background
            now = torch.where(w["valid"], w["depth"], background)  # today's: the fallback's landings, the rule's holes
            seen = self._open_border(w) & torch.isfinite(truth) & (truth > 0) & (truth <= dn.max_m)
            seen &= w["valid"].flatten(1).any(1).reshape(-1, 1, 1, 1)  # a keyframe landed somewhere: not all excluded
            for name, d in (("background", now), ("nearest", w["nearest_depth"])):
                metres = dn.denormalize(d.float()).clamp(dn.min_m, dn.max_m)
                sums[name] += float((metres - truth).abs()[seen].sum())
            count += int(seen.sum())
        found = {k: v / count if count else float("nan") for k, v in sums.items()} | {"pixels": float(count)}
        nearest = count >= min_pixels and found["nearest"] < found["background"]
        values = [1.0 if nearest else 0.0, found["background"], found["nearest"], float(count)]
        with torch.no_grad():
            self.hole_border_fit.copy_(torch.tensor(values, dtype=torch.float64))
        log.info(
            "hybrid: what the neighbours leave open at the image border takes %s (on %d pixels of %d keyframes warped "
            "from the others, their time window left out: %.3g m error with the nearest keyframe's depth, %.3g m "
            "with the background rule and the keyframe from behind)",
            "the nearest keyframe's depth" if nearest else "the background rule and the keyframe from behind", count,
            len(pick),
            found["nearest"], found["background"],
        )  # fmt: skip
        return found

    def _open_border(self, w: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 1, S, S)`` bool: what the neighbours leave open at the image's border, where a view sees beyond
        their frames: the holes that reach the border, and the pixels only the keyframe from behind landed on
        (``behind_keyframe``: it fills the neighbours' holes)."""
        return border_holes(w["valid"]) | w["from_fallback"]

    def _holes(
        self, w: dict[str, torch.Tensor], ground_depth: torch.Tensor | None, open_border: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The warped RGB with ``hole_rgb`` applied; the background depth of the holes (``None`` unless a setting
        uses the background rule; from the warped depth, no gradient), at most ``ground_depth`` (the ground's,
        normalized, where ``hole_ground`` fitted one: :meth:`_ground_depth_of`); and the pixels that keep their warped
        depth (the ``valid`` ones). ``open_border``: what the neighbours leave open at the border
        (:meth:`_open_border`, where :attr:`hole_border_rule` is nearest; else None) takes the nearest keyframe's own
        depth instead, and the keyframe from behind keeps only its colour there."""
        c = self.config
        if c.hole_depth != "background" and c.hole_rgb != "background":
            return w["rgb"], None, w["valid"]
        depth, source = background_fill_with_source(w["depth"].detach(), w["valid"])
        rgb = w["rgb"]
        if c.hole_rgb == "background":
            rgb = torch.where(w["valid"], rgb, background_colour(rgb, source))
        if ground_depth is not None:
            depth = torch.minimum(depth, ground_depth.to(depth.device, depth.dtype))
        kept = w["valid"]
        if open_border is not None:
            depth = torch.where(open_border, w["nearest_depth"].detach().to(depth.dtype), depth)
            kept = kept & ~open_border
        return rgb, depth, kept

    def _ground_depth_of(self, T_world_cam: np.ndarray) -> torch.Tensor | None:
        """Where the query pixels' rays meet the keyframes' ground, normalized ``(B, 1, S, S)`` (above 1 where a ray
        does not reach it: it never wins the minimum over a background depth); None without a ground plane."""
        ground = self.ground if self._background_rules() else None
        if ground is None:
            return None
        rays = self._ground_rays_on_device()
        if rays.device.type == "cpu":  # numpy is faster there (0.49 against 1.15 ms at 512x512, one thread, AMD EPYC)
            return self._normalized_ground(torch.from_numpy(ground.depth(T_world_cam, rays.numpy()))[:, None])
        return self._ground_depth_from(self._ground_terms(T_world_cam), rays)  # where the model runs: no host pixels

    def _ground_terms(self, T_world_cam: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The ground's :meth:`~pose2rgbd.placemap.ground.GroundPlane.camera_terms` of the queries on the model's
        device (None without a ground plane): what :meth:`_ground_depth_from` takes."""
        ground = self.ground if self._background_rules() else None
        if ground is None:
            return None
        dev = self.kf_K.device
        toward, above = (torch.from_numpy(a).to(dev) for a in ground.camera_terms(T_world_cam))
        return toward, above

    def _ground_depth_from(
        self, terms: tuple[torch.Tensor, torch.Tensor] | None, rays: torch.Tensor
    ) -> torch.Tensor | None:
        """:meth:`_ground_depth_of` from the queries' :meth:`_ground_terms` and the camera's rays
        (:meth:`_ground_rays_on_device`, looked up by the caller: it reads the camera from the device), on their
        device (nothing from the host: a CUDA graph replays it)."""
        if terms is None:
            return None
        return self._normalized_ground(ground_depth_from_terms(terms[0], terms[1], rays))

    def _background_rules(self) -> bool:
        """Whether a hole rule takes the background (``hole_depth`` or ``hole_rgb`` background): only those read the
        ground's depth."""
        return self.config.hole_depth == "background" or self.config.hole_rgb == "background"

    def _normalized_ground(self, z: torch.Tensor) -> torch.Tensor:
        dn = self.depth_normalizer
        return dn.normalize(z.clamp(max=2.0 * dn.max_m + 1.0)).float()  # type: ignore[no-any-return]

    def _ground_rays_on_device(self) -> torch.Tensor:
        """The model camera's pixel rays ``(S, S, 3)`` float32 on the model's device (made once per camera)."""
        cam = self.camera
        assert cam is not None  # a model with keyframes has its camera
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        dev = self.kf_K.device
        if self._ground_rays is None or self._ground_rays[0] != key or self._ground_rays[1].device != dev:
            self._ground_rays = (key, torch.from_numpy(cam.rays().astype(np.float32)).to(dev))
        return self._ground_rays[1]

    def _correct_rgb(self, w_rgb: torch.Tensor, corrected: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The warped colour with the fill network's correction (``corrected``) everywhere (``rgb_correction``
        ``everywhere``, the default: on real held-out blocks it corrects what the keyframes' own colours get wrong,
        docs/results.md), or only in the holes with ``holes``."""
        if self.config.rgb_correction == "holes":
            return torch.where(valid, w_rgb, corrected)
        return corrected

    def _correct_depth(
        self, depth_n: torch.Tensor, log_scale: torch.Tensor, valid: torch.Tensor, background: torch.Tensor | None
    ) -> torch.Tensor:
        """The warped depth (normalized) scaled by ``exp(log_scale)`` in metres, normalized again. A relative
        correction: an additive one in normalized units moved near depths by metres at every optimizer step (one
        normalized unit is half the depth range, hundreds of metres outdoors), which cost more than it fixed.
        With ``hole_depth`` ``nearest`` only pixels a keyframe point landed on are corrected; holes keep the
        nearest keyframe's depth (measured: a learned hole depth doubled the hole error after 93 steps). With
        ``background`` holes take the farther surface around them, grown from their edges
        (:func:`~pose2rgbd.methods.hybrid.hole_depth.background_fill`, computed once per forward by
        :meth:`_holes`; from the warped depth, uncorrected): holes carry three quarters of
        reprojection's depth error on held-out routes, which no correction of the warped pixels can reach
        (docs/results.md, "What limits the hybrid's depth")."""
        dn = self.depth_normalizer
        metres = dn.denormalize(depth_n.float()).clamp_min(max(dn.min_m, 1e-3))
        out = dn.normalize(metres * torch.exp(log_scale.float().clamp(-4.0, 4.0)))
        if self.config.hole_depth == "nearest":
            out = torch.where(valid, out, depth_n.float())
        elif self.config.hole_depth == "background":  # a rule, not learned: no gradient through the holes
            assert background is not None
            out = torch.where(valid, out, background)
        return out  # type: ignore[no-any-return]

    def forward(
        self,
        pose: torch.Tensor,
        T_world_cam: np.ndarray | None = None,
        exclude: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, torch.Tensor]:
        T = self._poses(pose) if T_world_cam is None else np.asarray(T_world_cam, dtype=np.float64)
        if self._graphs is not None and self._graphs_apply(exclude):
            return self._graphed_forward(self._graphs, pose, T)
        w = self.warp(T, exclude)
        open_border = self._open_border(w) if self.border_takes_nearest else None
        return self._finish(pose, w, self._ground_depth_of(T), open_border)

    def _finish(
        self,
        pose: torch.Tensor,
        w: dict[str, torch.Tensor],
        ground_depth: torch.Tensor | None,
        open_border: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """The forward pass after the warp ``w``: the holes' rules (:meth:`_holes`), the network and its
        corrections. On a GPU it waits for nothing on the host (with the torch network: a CUDA graph replays it)."""
        w_rgb, background, kept = self._holes(w, ground_depth, open_border)  # kept: the corrected, kept pixels
        runner = None if self.training else self.network_runner
        if runner is not None:  # serving: the network part in ONNX Runtime
            rgb, log_scale = runner(pose, w_rgb, w["depth"], w["valid"].float(), w["hits"])
            return {
                "rgb": self._correct_rgb(w_rgb, rgb, w.get("rgb_valid", w["valid"])),
                "depth": self._correct_depth(w["depth"], log_scale, kept, background),
                "confidence": w["valid"].float(),
            }
        warped = (w_rgb, w["depth"], w["valid"], w["hits"])
        if self.decoder is None:  # the decoder's four channels are zeros: the fill's stem leaves them out
            res = self.fill(torch.cat([t.to(w_rgb.dtype) for t in warped], dim=1), absent=DECODER_CHANNELS)
            dec: dict[str, torch.Tensor] = {}
        else:
            dec = decoder_inputs(self.decoder, pose.masked_fill(self.pose_fixed, 0.0), w_rgb)
            dt = dec["rgb"].dtype
            res = self.fill(torch.cat([dec["rgb"], dec["depth"], *(t.to(dt) for t in warped)], dim=1))
        # in float32 before the channels are taken apart: a channel of a bfloat16 channels-last tensor converts
        # pixel by pixel (at 256x256 on one thread 0.9 ms, the whole tensor 0.1; docs/serving.md)
        res = res.float()
        out = {
            "rgb": self._correct_rgb(w_rgb, w_rgb + res[:, :3], w.get("rgb_valid", w["valid"])),
            "depth": self._correct_depth(w["depth"], res[:, 3:4], kept, background),
            "confidence": w["valid"].float(),
        }
        if self.decoder is not None:
            out["decoder_rgb"], out["decoder_depth"] = dec["rgb"], dec["depth"]
        return out

    # -- CUDA graphs (engine.cuda_graphs) --------------------------------------------------------------------
    def use_cuda_graphs(self, on: bool = True, *, emulate: bool = False) -> bool:
        """Serve renders through CUDA graphs (:mod:`pose2rgbd.models.cuda_graphs`): the warp, the holes' rules, the
        network and its corrections -- everything after the keyframe search and gather -- captured once per batch
        size and replayed; where :attr:`hole_border_rule` is nearest, in two graphs with the border's holes found
        on the host between them. Only eval-mode forwards without gradient or training's exclusions take them; the
        fused geometry (``model.geometry fused``) has no captured path: False, and eager. ``emulate``: the same
        staging without graphs (tests on a CPU). Returns whether renders take them."""
        on = on and self.fused_input is None
        self._graphs = GraphCache(emulate=emulate) if on else None
        self._graph_state = None
        return on

    def _graphs_apply(self, exclude: object) -> bool:
        return (
            exclude is None
            and not self.training
            and not torch.is_grad_enabled()
            and self.fused_input is None
            and self.network_runner is None
        )

    def _state_of_graphs(self) -> tuple[object, ...]:
        """What a captured graph reads besides its inputs: the settings (the config, the depth range, the border
        rule), the keyframes, and every weight and buffer by address and version (a state dict's load, an optimizer
        step or a move changes them). Where it changes, the graphs go (:meth:`_graphed_forward`)."""
        dn = self.depth_normalizer
        tensors = tuple((t.data_ptr(), t._version) for t in itertools.chain(self.parameters(), self.buffers()))
        return repr(self.config), id(self.keyframes), dn.min_m, dn.max_m, self.border_takes_nearest, tensors

    def _graphed_forward(self, graphs: GraphCache, pose: torch.Tensor, T: np.ndarray) -> dict[str, torch.Tensor]:
        """:meth:`forward` through ``graphs`` (:meth:`use_cuda_graphs`): the host's part, then the device's part
        replayed from a graph of this batch's shapes and settings; eagerly where no graph can be had (the cache said
        why), from the same host part."""
        state = self._state_of_graphs()
        if state != self._graph_state:
            graphs.clear()
            self._graph_state = state
        inputs = self.warp_inputs(T)
        terms = self._ground_terms(T)
        rays = self._ground_rays_on_device() if terms is not None else None
        extra = [] if terms is None else list(terms)
        warp_t = inputs.tensors()
        n_warp = len(warp_t)
        border = self.border_takes_nearest
        key = (
            tuple(pose.shape), pose.dtype, inputs.settings(), tuple(inputs.kf_rgb.shape), terms is not None,
            None if rays is None else rays.data_ptr(), autocast_key(pose.device),
        )  # fmt: skip

        def ground_from(t: Sequence[torch.Tensor]) -> torch.Tensor | None:
            return None if rays is None else self._ground_depth_from((t[0], t[1]), rays)

        if not border:

            def whole(pose_: torch.Tensor, *t: torch.Tensor) -> dict[str, torch.Tensor]:
                return self._finish(
                    pose_, self.warp_from(inputs.with_tensors(t[:n_warp])), ground_from(t[n_warp:]), None
                )

            call = graphs.get(("whole", *key), whole, [pose, *warp_t, *extra])
            if call is None:
                return self._finish(pose, self.warp_from(inputs), ground_from(extra), None)
            out = call(pose, *warp_t, *extra)
        else:  # two graphs: the border's holes are labelled on the host between them (scipy, one pass)
            warp_call = graphs.get(("warp", *key), lambda *t: self.warp_from(inputs.with_tensors(t)), warp_t)
            w = self.warp_from(inputs) if warp_call is None else warp_call(*warp_t)
            open_border = self._open_border(w)
            names = sorted(w)
            ws = [w[n] for n in names]

            def finish(pose_: torch.Tensor, open_: torch.Tensor, *t: torch.Tensor) -> dict[str, torch.Tensor]:
                return self._finish(pose_, dict(zip(names, t[: len(names)])), ground_from(t[len(names) :]), open_)

            finish_call = None
            if warp_call is not None:
                finish_call = graphs.get(("finish", *key), finish, [pose, open_border, *ws, *extra])
            if finish_call is None:
                return self._finish(pose, dict(w), ground_from(extra), open_border)
            out = finish_call(pose, open_border, *ws, *extra)
        return {k: v.clone() for k, v in out.items()}  # the graph's outputs are overwritten by its next replay

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> HybridNet:
        # moved, cast or copied to another device: captured graphs would replay on the old tensors' memory
        graphs = getattr(self, "_graphs", None)  # (nn.Module's own calls may come before __init__ set it)
        if graphs is not None:
            graphs.clear()
        return super()._apply(fn, recurse)  # type: ignore[no-any-return]

    def network_part(self) -> NetworkPart:
        """The decoder + fill as one exportable module (shares this model's weights)."""
        return NetworkPart(self.decoder, self.fill, self.pose_fixed)

    def serve_network_part_with_onnxruntime(self, *, threads: int = 0, device: torch.device | None = None) -> float:
        """Export the network part to ONNX (checked against torch) and run it in ONNX Runtime in every later
        eval-mode forward (training forwards keep torch); returns the export's max abs error. The render engine
        calls this for ``engine.backend onnxruntime`` on the prepared copy it serves."""
        import tempfile
        from pathlib import Path

        dev = device or self.kf_K.device
        with tempfile.TemporaryDirectory(prefix="pose2rgbd-hybrid-onnx-") as d:
            path = Path(d) / "network.onnx"
            err = export_network_part(
                self.network_part(), path, pose_dim=int(self.pose_fixed.numel()), size=int(self.config.size)
            )
            runner = OnnxNetworkPart(path, dev, threads)  # the session has read the file
        self.network_runner = runner
        log.info("hybrid: decoder + fill served by ONNX Runtime on %s (max abs error to torch %.2g)", dev, err)
        return err

    # -- model contract ------------------------------------------------------------------------------------
    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        T = batch.get("T_world_cam")
        T_np = None if T is None else T.detach().cpu().numpy().astype(np.float64)
        exclude = None
        if self.training and "source_id" in batch and "seq_pos" in batch:
            n = len(batch["pose"])
            w = int(self.config.exclude_window)
            random = self.config.exclude_random  # torch generator: seeded by the trainer
            window = torch.randint(0, w + 1, (n,)).numpy() if random else np.full(n, w)
            exclude = (batch["source_id"].cpu().numpy(), batch["seq_pos"].cpu().numpy(), window)
        return self(batch["pose"], T_np, exclude)  # type: ignore[no-any-return]

    def recalibration_forward(self, batch: dict[str, Any]) -> None:
        """BatchNorm recalibration: only the decoder has BatchNorm and it sees the pose alone, so only it runs
        (the full training forward would draw the exclusion windows from the global generator, which the
        trainer's recalibration before each validation must not perturb; and the warp is not needed)."""
        if self.decoder is not None:
            self.decoder(batch["pose"].masked_fill(self.pose_fixed, 0.0))

    def _image_loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        err = (pred.float() - target) ** 2 if self.config.loss == "mse" else (pred.float() - target).abs()
        if mask is None:
            return err.mean()
        m = mask.float().expand_as(err)
        return (err * m).sum() / m.sum().clamp_min(1.0)

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        d = batch["depth"].float()
        valid = ~torch.isnan(d)
        t = self.depth_normalizer.normalize(torch.where(valid, d, torch.zeros_like(d)))
        rgb = batch["rgb"].float()
        losses = {
            "rgb_loss": self._image_loss(outputs["rgb"], rgb),
            "depth_loss": self._image_loss(outputs["depth"], t, valid),
        }
        w = float(self.config.decoder_loss_weight)
        if w > 0 and "decoder_rgb" in outputs:
            losses["decoder_rgb_loss"] = w * self._image_loss(outputs["decoder_rgb"], rgb)
            losses["decoder_depth_loss"] = w * self._image_loss(outputs["decoder_depth"], t, valid)
        return losses

    @torch.no_grad()
    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        """Cheap batch metrics in data units (the full evaluation lives in pose2rgbd.evaluation)."""
        m: dict[str, Any] = {"rgb_mae_px": (outputs["rgb"].float().clamp(-1, 1) - batch["rgb"]).abs().mean() * 127.5}
        gt = batch["depth"].float()
        dn = self.depth_normalizer
        fin = torch.isfinite(gt) & (gt <= dn.max_m)
        if bool(fin.any()):
            m["depth_mae"] = (dn.denormalize(outputs["depth"].float()) - gt)[fin].abs().mean()
        m["hole_fraction"] = 1.0 - outputs["confidence"].float().mean()
        return m


def build_model(
    cfg: HybridConfig,
    depth_normalizer: DepthNormalizer | None = None,
    pose_normalizer: PoseNormalizer | None = None,
) -> HybridNet:
    """A hybrid network for ``cfg`` with an empty keyframe store (the recipe fills it; a checkpoint load restores
    it). ``model(pose)`` returns ``"rgb"``, ``"depth"``, ``"confidence"``, and with ``cfg.decoder``
    ``"decoder_rgb"``, ``"decoder_depth"`` (see :class:`HybridNet`)."""
    return HybridNet(cfg, depth_normalizer, pose_normalizer)

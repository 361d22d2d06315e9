"""What a servable model says about its inputs and outputs: the transforms it owns, as saved state.

A model that an engine serves mixes one of these into its :class:`~pose2rgbd.models.base.ModelBase` class::

    class MyRenderer(PoseToImage, ModelBase): ...     # pose -> images, served by the render engine
    class MyLocalizer(ImageToPose, ModelBase): ...    # images -> pose, served by the localize engine

Both keep the pose normalization (:class:`~pose2rgbd.models.normalization.PoseNormalizer`: encoding kind +
per-dimension training extremes) as the buffers ``pose_min`` / ``pose_max`` of the model, so it is part of the
``state_dict`` and of every checkpoint; datasets, evaluation and engines call the model's methods instead of
keeping a copy of the normalization. Call :meth:`PoseNormalization.init_pose_normalization` in ``__init__``.

``forward(x)`` of a servable model takes the tensor the model's ``*_to_input`` method makes and returns a dict of
tensors, which the model's ``outputs_to_*`` method turns into numpy arrays in data units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.encoding import encode_poses, encoding_dim
from pose2rgbd.models.normalization import PoseNormalizer


def _quat_xyzw_from_matrix_torch(R: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` -> ``(N, 4)`` unit quaternions (x, y, z, w), canonical sign (w >= 0), differentiable.

    Shepperd's method: the four candidate formulas are all evaluated (square roots of clamped, hence finite,
    arguments) and the numerically best one is picked per rotation with ``torch.where``, so gradients stay
    finite everywhere. Hand-written because the only torch library with it (kornia) is a training extra.
    """
    m00, m11, m22 = R[:, 0, 0], R[:, 1, 1], R[:, 2, 2]
    tr = m00 + m11 + m22
    eps = 1e-12
    s0 = torch.sqrt((1.0 + tr).clamp(min=eps)) * 2.0  # 4 w
    s1 = torch.sqrt((1.0 + m00 - m11 - m22).clamp(min=eps)) * 2.0  # 4 x
    s2 = torch.sqrt((1.0 - m00 + m11 - m22).clamp(min=eps)) * 2.0  # 4 y
    s3 = torch.sqrt((1.0 - m00 - m11 + m22).clamp(min=eps)) * 2.0  # 4 z
    q0 = torch.stack([(R[:, 2, 1] - R[:, 1, 2]) / s0, (R[:, 0, 2] - R[:, 2, 0]) / s0,
                      (R[:, 1, 0] - R[:, 0, 1]) / s0, 0.25 * s0], dim=1)  # fmt: skip
    q1 = torch.stack([0.25 * s1, (R[:, 0, 1] + R[:, 1, 0]) / s1,
                      (R[:, 0, 2] + R[:, 2, 0]) / s1, (R[:, 2, 1] - R[:, 1, 2]) / s1], dim=1)  # fmt: skip
    q2 = torch.stack([(R[:, 0, 1] + R[:, 1, 0]) / s2, 0.25 * s2,
                      (R[:, 1, 2] + R[:, 2, 1]) / s2, (R[:, 0, 2] - R[:, 2, 0]) / s2], dim=1)  # fmt: skip
    q3 = torch.stack([(R[:, 0, 2] + R[:, 2, 0]) / s3, (R[:, 1, 2] + R[:, 2, 1]) / s3,
                      0.25 * s3, (R[:, 1, 0] - R[:, 0, 1]) / s3], dim=1)  # fmt: skip
    pick = torch.stack([tr, m00, m11, m22], dim=1).argmax(dim=1)[:, None]
    q = torch.where(pick == 0, q0, torch.where(pick == 1, q1, torch.where(pick == 2, q2, q3)))
    q = q / q.norm(dim=1, keepdim=True)
    return torch.where(q[:, 3:4] < 0, -q, q)


def _encode_poses_torch(T: torch.Tensor, kind: str) -> torch.Tensor:
    """Torch twin of :func:`pose2rgbd.geometry.encoding.encode_poses` (differentiable)."""
    t = T[:, :3, 3]
    R = T[:, :3, :3]
    if kind == "6dof-quat":
        return torch.cat([t, _quat_xyzw_from_matrix_torch(R)], dim=1)
    if kind == "6dof-rot6d":  # the camera's x and y axes (columns), as geometry.encoding
        return torch.cat([t, R[:, :, 0], R[:, :, 1]], dim=1)
    if kind == "6dof-euler":  # extrinsic xyz (R = Rz(yaw) Ry(pitch) Rx(roll)), as geometry.rotations
        roll = torch.atan2(R[:, 2, 1], R[:, 2, 2])
        pitch = torch.asin((-R[:, 2, 0]).clamp(-1.0 + 1e-7, 1.0 - 1e-7))
        yaw = torch.atan2(R[:, 1, 0], R[:, 0, 0])
        return torch.cat([t, torch.stack([roll, pitch, yaw], dim=1)], dim=1)
    raise ConfigError(f"unknown pose encoding {kind!r}")


class PoseNormalization(nn.Module):
    """Pose normalization as model state (buffers ``pose_min`` / ``pose_max``, float64, one per dimension)."""

    pose_min: torch.Tensor
    pose_max: torch.Tensor
    pose_encoding: str

    def init_pose_normalization(self, encoding: str, normalizer: PoseNormalizer | None = None) -> None:
        """Register the buffers for ``encoding`` (one of :data:`~pose2rgbd.geometry.encoding.ENCODINGS`). Until a
        normalizer is set (:meth:`set_pose_normalizer`, or loaded with the weights) the encoded pose is used as is."""
        d = encoding_dim(encoding)
        self.pose_encoding = encoding
        self.register_buffer("pose_min", torch.full((d,), -1.0, dtype=torch.float64))
        self.register_buffer("pose_max", torch.full((d,), 1.0, dtype=torch.float64))
        if normalizer is not None:
            self.set_pose_normalizer(normalizer)

    @property
    def pose_normalizer(self) -> PoseNormalizer:
        """The current normalization (rebuilt only when the buffers changed: a load, a copy, a move)."""
        key = (self.pose_min._version, self.pose_max._version, self.pose_min.data_ptr(), self.pose_max.data_ptr())
        cached = self.__dict__.get("_pose_normalizer_cache")
        if cached is None or cached[0] != key:
            pn = PoseNormalizer(
                self.pose_encoding,
                self.pose_min.detach().cpu().numpy().copy(),
                self.pose_max.detach().cpu().numpy().copy(),
            )
            cached = (key, pn)
            self.__dict__["_pose_normalizer_cache"] = cached
        return cached[1]  # type: ignore[no-any-return]

    def set_pose_normalizer(self, normalizer: PoseNormalizer) -> None:
        """Adopt ``normalizer`` (e.g. fitted on the training poses); its encoding must be the model's."""
        if normalizer.kind != self.pose_encoding:
            raise ConfigError(
                f"pose normalizer is for {normalizer.kind!r} but the model takes {self.pose_encoding!r} poses"
            )
        with torch.no_grad():
            self.pose_min.copy_(torch.as_tensor(normalizer.minimum, dtype=torch.float64))
            self.pose_max.copy_(torch.as_tensor(normalizer.maximum, dtype=torch.float64))

    def normalize_poses(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``(N, 4, 4)`` -> ``(N, D)`` float32, in [-1, 1] for poses within the training extremes."""
        return self.pose_normalizer.normalize(np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4))

    def poses_to_input_torch(self, T_world_cam: torch.Tensor) -> torch.Tensor:
        """Differentiable twin of the numpy pose path: ``(N, 4, 4)`` torch poses -> the normalized encoding
        ``(N, D)`` float32 (the same numbers as :meth:`normalize_poses`), with gradients to ``T_world_cam``.
        Used by render-and-compare refinement (:mod:`pose2rgbd.inference.refine`)."""
        T = T_world_cam.reshape(-1, 4, 4)
        enc = _encode_poses_torch(T, self.pose_encoding)
        lo = self.pose_min.to(enc)
        span = (self.pose_max - self.pose_min).to(enc)
        safe = torch.where(span > 0, span, torch.ones_like(span))
        x = 2.0 * (enc - lo) / safe - 1.0
        return torch.where(span > 0, x, torch.zeros_like(x)).float()

    @property
    def oob_dims(self) -> slice:
        """The normalized pose dimensions the out-of-bounds flag checks: all of them (the network takes the whole
        encoded pose; a model whose networks do not see the pose checks fewer, e.g. the hybrid's position)."""
        return slice(None)

    def out_of_bounds(self, T_world_cam: np.ndarray, margin: float = 0.1) -> np.ndarray:
        """``(N,)`` bool: some normalized pose dimension of :attr:`oob_dims` lies outside the training box widened by
        :meth:`PoseNormalizer.margins <pose2rgbd.models.normalization.PoseNormalizer.margins>` (positions by
        ``margin`` x its widest half-side, rotations by at least a few degrees of turn)."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        return self.out_of_bounds_normalized(self.pose_normalizer.normalize(T), margin)

    def out_of_bounds_normalized(self, x: np.ndarray, margin: float) -> np.ndarray:
        """:meth:`out_of_bounds` of already normalized poses ``(N, D)`` (the one rule of both paths)."""
        return self.pose_normalizer.out_of_bounds_normalized(x, margin, dims=self.oob_dims)


class PoseToImage(PoseNormalization):
    """Mixin of models that render images from camera poses (served by the render engine).

    A subclass defines ``image_hw`` and ``has_rgb`` / ``has_depth``; it may override :meth:`depth_to_metres`
    (default: the depth output already is in metres) and ``depth_range_m``. ``forward(pose (N, D))`` returns
    ``"rgb"`` ``(N, 3, H, W)`` in [-1, 1], ``"depth"`` ``(N, 1, H, W)`` and optionally ``"confidence"``
    ``(N, 1, H, W)``.
    """

    @property
    def image_hw(self) -> tuple[int, int]:
        """Output image size (height, width)."""
        raise NotImplementedError

    @property
    def has_rgb(self) -> bool:
        raise NotImplementedError

    @property
    def has_depth(self) -> bool:
        raise NotImplementedError

    @property
    def depth_range_m(self) -> tuple[float, float] | None:
        """The depth range the model can answer in (metres or dataset units), ``None`` when unbounded."""
        return None

    @property
    def confidence_is_seen(self) -> bool:
        """Whether the ``"confidence"`` output is 1 where something the model saw landed (the hybrid: a keyframe's
        point) and 0 where it filled: then the share of such pixels says whether a view looks at anything the model
        saw at all (the render engine's ``min_seen``). False for a learned confidence (Slice-S's)."""
        return False

    def depth_to_metres(self, depth: torch.Tensor) -> torch.Tensor:
        """The ``"depth"`` output -> metres (or dataset units for unscaled depth)."""
        return depth

    def poses_to_input(self, T_world_cam: np.ndarray, *, oob_margin: float = 0.1) -> tuple[torch.Tensor, np.ndarray]:
        """``(N, 4, 4)`` poses -> the network input ``(N, D)`` float32 on the model's device and the
        out-of-bounds flags ``(N,)`` (:meth:`out_of_bounds`), from one encoding pass."""
        pn = self.pose_normalizer
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        x = pn.normalize_encoded(encode_poses(T, pn.kind))
        oob = self.out_of_bounds_normalized(x, oob_margin)
        return torch.from_numpy(x.astype(np.float32)).to(self.pose_min.device), oob

    def outputs_to_arrays(self, outputs: dict[str, Any]) -> dict[str, np.ndarray | None]:
        """``{"rgb": uint8 (N, H, W, 3) | None, "depth": float32 (N, H, W) metres | None,
        "confidence": float32 (N, H, W) | None}`` (``None`` for heads the model does not have)."""

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().numpy())  # a copy only where it is strided

        out: dict[str, np.ndarray | None] = {"rgb": None, "depth": None, "confidence": None}
        if outputs.get("rgb") is not None:
            x = outputs["rgb"]
            on_cpu = x.device.type == "cpu"  # (numpy takes the strides of a channels-last tensor as they are)
            out["rgb"] = rgb_to_uint8_numpy(x.detach().float().numpy()) if on_cpu else rgb_to_uint8_on_device(x)
        if outputs.get("depth") is not None:
            out["depth"] = arr(self.depth_to_metres(outputs["depth"].float())[:, 0])
        if outputs.get("confidence") is not None:
            out["confidence"] = arr(outputs["confidence"][:, 0])
        return out


def rgb_to_uint8_numpy(x: np.ndarray) -> np.ndarray:
    """RGB ``(N, 3, H, W)`` in [-1, 1] -> uint8 ``(N, H, W, 3)``, rounded half to even
    (:meth:`PoseToImage.outputs_to_arrays` on the CPU, where numpy does it faster than torch: 0.38 against 1.16 ms
    at 512x512 on one thread, AMD EPYC)."""
    a = x.transpose(0, 2, 3, 1)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def rgb_to_uint8_on_device(x: torch.Tensor) -> np.ndarray:
    """:func:`rgb_to_uint8_numpy` on the tensor's device (a GPU), then to the host: a quarter of the bytes cross."""
    u8 = (x.detach().float() + 1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)  # half to even, as np.rint
    return u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # type: ignore[no-any-return]


class ImageToPose(PoseNormalization):
    """Mixin of models that localize the camera from an image (served by the localize engine).

    A subclass defines ``input_hw``. ``forward(images (N, 3, H, W) in [-1, 1])`` returns ``"pose"`` ``(N, D)``
    (the normalized pose encoding) and optionally ``"confidence"`` ``(N,)`` in [0, 1]; override
    :meth:`outputs_to_poses` for another output layout.
    """

    @property
    def input_hw(self) -> tuple[int, int]:
        """Input image size (height, width) the network takes."""
        raise NotImplementedError

    def images_to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` RGB at :attr:`input_hw` -> ``(N, 3, H, W)`` float32 in [-1, 1] on the model's
        device. Another size raises :class:`ConfigError` (resize before, e.g. with the dataset cache)."""
        a = np.asarray(images)
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ConfigError(f"images: expected uint8 (N, H, W, 3), got {a.dtype} {a.shape}")
        if tuple(a.shape[1:3]) != tuple(self.input_hw):
            raise ConfigError(
                f"images are {a.shape[1]}x{a.shape[2]}, the model takes {self.input_hw[0]}x{self.input_hw[1]}"
            )
        x = torch.from_numpy(np.ascontiguousarray(a)).to(self.pose_min.device)
        return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

    def outputs_to_poses(self, outputs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(T_world_cam (N, 4, 4) float64, confidence (N,) float32)`` from the network outputs."""
        x = outputs["pose"].detach().float().cpu().numpy().astype(np.float64)
        T = self.pose_normalizer.denormalize(x)
        conf = outputs.get("confidence")
        c = np.ones(len(T), np.float32) if conf is None else conf.detach().float().cpu().numpy().reshape(len(T))
        return T, c.astype(np.float32)

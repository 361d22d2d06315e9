"""Render-and-compare pose refinement: move a camera pose until a pose -> image model's render matches the query.

Starting from an initial ``T_world_cam`` (e.g. a localizer's estimate), the pose is refined by gradient steps on
a 6-DoF increment ``xi = (rho, omega)`` on the manifold, ``T = T0 @ exp(xi^)`` (``exp`` of the 4x4 twist matrix,
:func:`torch.linalg.matrix_exp`: rotation ``omega`` in radians about the camera's own axes, translation ``rho``
in metres in the camera frame). The cost is a robust photometric error between the query image and the render of
any :class:`~pose2rgbd.models.interfaces.PoseToImage` torch model at ``T`` (PoseGAN's generator, a Pose2RGBD
model, the analytic ground plane), differentiable end to end through the model's own pose normalization
(:meth:`~pose2rgbd.models.interfaces.PoseNormalization.poses_to_input_torch`):

* Charbonnier penalty ``sqrt(r^2 + eps^2) - eps`` on the RGB difference (in [-1, 1] units), optionally plus the
  same on image gradients (an edge term, ``edge_weight``), weighted by the model's confidence output when it
  has one (e.g. sky / invalid pixels of the analytic renderer get weight 0);
* coarse to fine: ``levels`` pyramid levels (Gaussian blur + 2x downsampling); the coarse, blurred levels widen
  the basin of convergence, the fine level sharpens the estimate;
* Adam on ``xi`` with separate step sizes for rotation (degrees) and translation (metres);
* stopping rule per level: at most ``iterations`` steps, or when the best cost improved by less than ``rel_tol``
  (relative) over the last ``patience`` steps; and overall at most ``max_seconds``. The pose with the lowest cost
  seen is returned (never worse than the start on the finest level's cost).

Reported per frame: residual (mean robust cost at full resolution) before and after, iterations and time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.config import help_field, param_ranges, ranged_field
from pose2rgbd.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from pose2rgbd.inference.localize import Localizer, LocalizeResult
    from pose2rgbd.models.interfaces import PoseToImage

log = logging.getLogger(__name__)


@dataclass
class RefineConfig:
    """Render-and-compare refinement (see :mod:`pose2rgbd.inference.refine`)."""

    levels: int = ranged_field(3, "pyramid levels, coarse to fine (1: full resolution only)", 1, 8)
    iterations: int = ranged_field(60, "at most this many gradient steps per pyramid level", 1, 10000)
    lr_deg: float = ranged_field(0.5, "Adam step size of the rotation increment (degrees)", 1e-6, 90.0)
    lr_m: float = ranged_field(0.0, "Adam step size of the translation increment (metres; 0: 1 % of the model's "
                               "training position span)", 0.0, 1e6)  # fmt: skip
    charbonnier_eps: float = ranged_field(0.01, "Charbonnier epsilon (image units, [-1, 1] scale)", 1e-6, 1.0)
    edge_weight: float = ranged_field(0.0, "weight of the image-gradient (edge) term (0: off)", 0.0, 100.0)
    blur_sigma: float = ranged_field(1.0, "Gaussian blur (pixels of each level) before comparing", 0.0, 10.0)
    rel_tol: float = ranged_field(1e-3, "stop a level when the best cost improved less than this (relative)...",
                                  0.0, 1.0)  # fmt: skip
    patience: int = ranged_field(10, "...over this many steps", 1, 10000)
    max_seconds: float = ranged_field(0.0, "stop after this much time per call (0: no limit)", 0.0, 1e6)
    device: str = help_field("auto", "torch device for refinement: auto (the model's), cpu, cuda, cuda:N")

    def __post_init__(self) -> None:
        for name, (lo, hi) in param_ranges(RefineConfig).items():
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"{name}: {v} is outside its range [{lo}, {hi}]")


@dataclass
class RefineResult:
    """Refined poses of a batch and what the refinement did."""

    T_world_cam: np.ndarray  # (N, 4, 4) float64 refined poses
    T_initial: np.ndarray  # (N, 4, 4) the starting poses
    residual_before: np.ndarray  # (N,) robust photometric cost at full resolution at the start
    residual_after: np.ndarray  # (N,) the same at the returned pose
    iterations: int  # gradient steps taken (all levels)
    seconds: float  # wall time of the call
    stop_reason: str  # "converged" | "max_iterations" | "time"

    def __len__(self) -> int:
        return len(self.T_world_cam)


def _hat(xi: torch.Tensor) -> torch.Tensor:
    """``(N, 6)`` (rho, omega) -> ``(N, 4, 4)`` twist matrices."""
    import torch

    rho, w = xi[:, :3], xi[:, 3:]
    z = torch.zeros_like(w[:, 0])
    W = torch.stack([z, -w[:, 2], w[:, 1], w[:, 2], z, -w[:, 0], -w[:, 1], w[:, 0], z], dim=1).view(-1, 3, 3)
    top = torch.cat([W, rho[:, :, None]], dim=2)
    return torch.cat([top, torch.zeros_like(top[:, :1])], dim=1)


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """``(N, 6)`` increments (rho metres, omega radians) -> ``(N, 4, 4)`` rigid transforms (differentiable)."""
    import torch

    T: torch.Tensor = torch.linalg.matrix_exp(_hat(xi))
    return T


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    import torch

    r = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with replicated borders. Hand-written (a few lines) because the torch library that
    has it (kornia) is only a training extra, and refinement runs in the serving path."""
    import torch.nn.functional as F

    if sigma <= 0:
        return img
    k = _gaussian_kernel(sigma, img.device).to(img.dtype)
    c = img.shape[1]
    r = (len(k) - 1) // 2
    x = F.pad(img, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _down(img: torch.Tensor, level: int) -> torch.Tensor:
    import torch.nn.functional as F

    for _ in range(level):
        if min(img.shape[-2:]) < 2:
            break
        img = F.avg_pool2d(_blur(img, 1.0), 2)
    return img


def _grad(img: torch.Tensor) -> torch.Tensor:
    """Forward differences in x and y, stacked on the channel axis (same size, zero at the far border)."""
    import torch
    import torch.nn.functional as F

    gx = F.pad(img[..., :, 1:] - img[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(img[..., 1:, :] - img[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([gx, gy], dim=1)


@contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """The model's parameters need no gradients while a pose is refined (restored afterwards)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Refiner:
    """Refine camera poses against query images with a pose -> image model (see the module docstring).

    Args:
        model: a :class:`~pose2rgbd.models.interfaces.PoseToImage` torch model with an RGB output (used as is,
            in eval mode; its weights are not changed).
        config: the refinement settings.
    """

    def __init__(self, model: PoseToImage, config: RefineConfig | None = None) -> None:
        import torch

        from pose2rgbd.models.device import resolve_device
        from pose2rgbd.models.interfaces import PoseToImage

        if not isinstance(model, PoseToImage):
            raise ConfigError(
                f"refinement renders the pose: it needs a pose -> image model (PoseToImage), got {type(model).__name__}"
            )
        if not model.has_rgb:
            raise ConfigError("refinement compares RGB images: the model has no RGB output")
        why_not = getattr(model, "pose_gradient_unsupported", None)  # a model class says why it cannot refine
        if why_not:
            kind = getattr(model, "kind", type(model).__name__)
            raise ConfigError(f"refinement follows the render's gradient in the pose; a {kind!r} model: {why_not}")
        self.cfg = config if config is not None else RefineConfig()
        self._torch = torch
        if self.cfg.device == "auto":
            self.device = model.pose_min.device
        else:
            self.device = resolve_device(self.cfg.device)
        self.model = model.to(self.device).eval()
        span = (model.pose_max - model.pose_min)[:3].detach().cpu().numpy()
        extent = float(np.max(span)) if np.isfinite(span).all() and np.max(span) > 0 else 10.0
        self.lr_m = self.cfg.lr_m if self.cfg.lr_m > 0 else 0.01 * extent

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.model.image_hw

    def _query(self, images: np.ndarray) -> torch.Tensor:
        import cv2

        a = np.asarray(images)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ConfigError(f"refine: images must be uint8 (N, H, W, 3) RGB, got {a.dtype} {a.shape}")
        h, w = self.image_hw
        if a.shape[1:3] != (h, w):  # the model renders at its own size: compare there (area resampling)
            a = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in a])
        x = self._torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def _render(self, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.model(self.model.poses_to_input_torch(T))
        rgb = out["rgb"].float()
        conf = out.get("confidence")
        return rgb, None if conf is None else conf.detach().float()

    def _cost(self, rgb: torch.Tensor, conf: torch.Tensor | None, query: torch.Tensor, level: int) -> torch.Tensor:
        """``(N,)`` mean robust cost of each frame at pyramid ``level``."""
        import torch

        a = _down(rgb, level)
        b = _down(query, level)
        w = None if conf is None else _down(conf, level)
        if self.cfg.blur_sigma > 0 and level > 0:
            a, b = _blur(a, self.cfg.blur_sigma), _blur(b, self.cfg.blur_sigma)
        eps = self.cfg.charbonnier_eps

        def charb(r: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(r * r + eps * eps) - eps

        c = charb(a - b)
        if self.cfg.edge_weight > 0:
            c = torch.cat([c, self.cfg.edge_weight * charb(_grad(a) - _grad(b))], dim=1)
        if w is None:
            return c.mean(dim=(1, 2, 3))
        wsum = w.sum(dim=(1, 2, 3)).clamp(min=1e-6) * c.shape[1]
        return (c * w).sum(dim=(1, 2, 3)) / wsum

    def residual(self, images: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
        """``(N,)`` the full-resolution robust cost of ``T_world_cam`` against ``images`` (no refinement)."""
        torch = self._torch
        q = self._query(images)
        T = torch.as_tensor(np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4), device=self.device)
        with torch.no_grad():
            rgb, conf = self._render(T)
            cost: np.ndarray = self._cost(rgb, conf, q, 0).cpu().numpy().astype(np.float64)
            return cost

    def refine(self, images: np.ndarray, T_init: np.ndarray) -> RefineResult:
        """Refine ``T_init`` ``(N, 4, 4)`` (or one ``(4, 4)``) against ``images`` uint8 ``(N, H, W, 3)``."""
        torch = self._torch
        t_start = time.perf_counter()
        query = self._query(images)
        T0_np = np.asarray(T_init, dtype=np.float64).reshape(-1, 4, 4)
        if len(T0_np) != len(query):
            raise ConfigError(f"refine: {len(query)} images but {len(T0_np)} initial poses")
        if not np.all(np.isfinite(T0_np)):
            raise ConfigError("refine: an initial pose contains NaN or inf")
        n = len(T0_np)
        T0 = torch.as_tensor(T0_np, device=self.device)
        rot = torch.zeros(n, 3, dtype=torch.float64, device=self.device, requires_grad=True)
        trans = torch.zeros(n, 3, dtype=torch.float64, device=self.device, requires_grad=True)
        iters = 0
        stop = "max_iterations"
        with _frozen(self.model):
            with torch.no_grad():
                rgb, conf = self._render(T0)
                before = self._cost(rgb, conf, query, 0)
            best_xi = torch.zeros(n, 6, dtype=torch.float64, device=self.device)
            for level in reversed(range(self.cfg.levels)):
                if min(self.image_hw) >> level < 4:
                    continue  # too small to say anything
                opt = torch.optim.Adam(
                    [
                        {"params": [trans], "lr": self.lr_m},
                        {"params": [rot], "lr": math.radians(self.cfg.lr_deg)},
                    ]
                )
                with torch.no_grad():
                    trans.copy_(best_xi[:, :3])
                    rot.copy_(best_xi[:, 3:])
                    rgb, conf = self._render(T0 @ se3_exp(best_xi))
                    best = self._cost(rgb, conf, query, level)
                history = [float(best.sum())]
                for _ in range(self.cfg.iterations):
                    if self.cfg.max_seconds and time.perf_counter() - t_start > self.cfg.max_seconds:
                        stop = "time"
                        break
                    xi = torch.cat([trans, rot], dim=1)
                    rgb, conf = self._render(T0 @ se3_exp(xi))
                    cost = self._cost(rgb, conf, query, level)
                    with torch.no_grad():  # keep, per frame, the increment with the lowest cost seen
                        better = cost < best
                        best = torch.where(better, cost, best)
                        best_xi = torch.where(better[:, None], xi.detach(), best_xi)
                    opt.zero_grad(set_to_none=True)
                    cost.sum().backward()
                    opt.step()
                    iters += 1
                    history.append(float(best.sum()))
                    if len(history) > self.cfg.patience:
                        old = history[-1 - self.cfg.patience]
                        if old - history[-1] <= self.cfg.rel_tol * max(abs(old), 1e-12):
                            stop = "converged"
                            break
                if stop == "time":
                    break
            with torch.no_grad():
                T_best = T0 @ se3_exp(best_xi)
                rgb, conf = self._render(T_best)
                after = self._cost(rgb, conf, query, 0)
                keep = after <= before  # coarse levels can drift: never return a worse full-resolution fit
                T_out = torch.where(keep[:, None, None], T_best, T0)
                after = torch.where(keep, after, before)
        return RefineResult(
            T_world_cam=T_out.detach().cpu().numpy(),
            T_initial=T0_np,
            residual_before=before.cpu().numpy().astype(np.float64),
            residual_after=after.cpu().numpy().astype(np.float64),
            iterations=iters,
            seconds=time.perf_counter() - t_start,
            stop_reason=stop,
        )


class RefinedLocalizer:
    """A :class:`~pose2rgbd.inference.localize.Localizer` whose poses are refined by a :class:`Refiner`
    (the localizer's estimate is the starting pose; the confidence is the localizer's)."""

    def __init__(self, localizer: Localizer, refiner: Refiner, *, chunk: int = 16) -> None:
        self.localizer = localizer
        self.refiner = refiner
        self.camera = localizer.camera
        self.world_frame = localizer.world_frame
        self.chunk = int(chunk)
        self.last: list[RefineResult] = []

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.localizer.input_hw

    def localize(self, images: np.ndarray) -> LocalizeResult:
        from pose2rgbd.inference.localize import LocalizeResult, check_image_batch

        t0 = time.perf_counter()
        batch = check_image_batch(images)
        first = self.localizer.localize(batch)
        out = np.empty_like(first.T_world_cam)
        self.last = []
        for s in range(0, len(batch), self.chunk):
            r = self.refiner.refine(batch[s : s + self.chunk], first.T_world_cam[s : s + self.chunk])
            out[s : s + self.chunk] = r.T_world_cam
            self.last.append(r)
        return LocalizeResult(out, first.confidence, time.perf_counter() - t0)

"""Depth network (small U-Net, multi-scale sigmoid disparity), pose network (SfMLearner style) and the
view-synthesis loss (monodepth2 recipe: SSIM + L1, per-pixel minimum over source frames, auto-masking,
edge-aware smoothness, every scale upsampled to the input resolution). Warping and SSIM are kornia's.
"""

from __future__ import annotations

from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
from pose2rgbd.models.base import ModelBase


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, padding_mode="reflect"), nn.ELU(inplace=True))


class DepthNet(nn.Module):
    """U-Net: 5 stride-2 encoder levels, a decoder with skips; sigmoid disparity at full, 1/2, 1/4, 1/8."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        c = [int(x) for x in channels]
        self.enc = nn.ModuleList()
        cin = 3
        for co in c:
            self.enc.append(nn.Sequential(_conv(cin, co, 2), _conv(co, co)))
            cin = co
        # decoder level k (k = 4..0) upsamples to the resolution of encoder level k - 1 (level -1: the input)
        dec_out = [max(8, co // 2) for co in c]
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        prev = c[4]
        for k in range(4, -1, -1):
            skip = c[k - 1] if k > 0 else 0
            self.up.append(_conv(prev, dec_out[k]))
            self.fuse.append(_conv(dec_out[k] + skip, dec_out[k]))
            prev = dec_out[k]
        # disparity heads at scales 3, 2, 1, 0 (1/8 .. full) = decoder levels k = 3, 2, 1, 0
        self.heads = nn.ModuleDict(
            {str(k): nn.Conv2d(dec_out[k], 1, 3, 1, 1, padding_mode="reflect") for k in range(4)}
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: (B, 3, H, W) in [0, 1] -> ``[disp_scale0, disp_scale1, ...]`` (full first), each in (0, 1)."""
        feats = []
        h = (x - 0.45) / 0.225
        for e in self.enc:
            h = e(h)
            feats.append(h)
        disps: dict[int, torch.Tensor] = {}
        h = feats[4]
        for j, k in enumerate(range(4, -1, -1)):
            h = F.interpolate(self.up[j](h), scale_factor=2.0, mode="nearest")
            if k > 0:
                h = torch.cat([h, feats[k - 1]], 1)
            h = self.fuse[j](h)
            if k < 4:
                disps[k] = torch.sigmoid(self.heads[str(k)](h))
        return [disps[s] for s in range(4)]


class PoseNet(nn.Module):
    """Two frames -> ``T_source_target`` (axis-angle + translation, scaled by 0.01 as SfMLearner / monodepth2)."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 6
        for co in channels:
            layers += [nn.Conv2d(cin, int(co), 3, 2, 1), nn.ReLU(inplace=True)]
            cin = int(co)
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 6, 1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = torch.cat([target, source], 1)
        x = (x - 0.45) / 0.225
        v = 0.01 * self.head(self.body(x)).mean(dim=(2, 3))
        return pose_vec_to_matrix(v[:, :3], v[:, 3:])


def pose_vec_to_matrix(axis_angle: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(B, 3), (B, 3) -> (B, 4, 4)."""
    R = kornia.geometry.conversions.axis_angle_to_rotation_matrix(axis_angle)
    T = torch.zeros(axis_angle.shape[0], 4, 4, dtype=R.dtype, device=R.device)
    T[:, :3, :3] = R
    T[:, :3, 3] = translation
    T[:, 3, 3] = 1.0
    return T


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Sigmoid disparity -> depth in [min_depth, max_depth] (monodepth2's mapping)."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (lo + (hi - lo) * disp)


SATURATION = 0.01  # a pixel is "at the far (near) plane" when its depth is within 1 % of max_depth (min_depth)
COLLAPSE_LOG_STD = 0.02  # median per-image std of log depth below this: the depth is (nearly) one constant
COLLAPSE_SATURATED = 0.5  # ... or more than this share of the pixels sits at the far or near plane


def depth_spread(depth: torch.Tensor, min_depth: float, max_depth: float) -> dict[str, float]:
    """How much the predicted depth varies, to make a collapsed depth network visible.

    ``depth``: (B, 1, H, W) or (B, H, W) in network units. Returns ``log_std`` (median over the images of the
    per-image standard deviation of log depth: scale-free, 0 for a constant map; a 50-300 m scene is ~0.4),
    ``at_max`` / ``at_min`` (share of pixels within :data:`SATURATION` of the far / near plane) and ``depth_med``
    (median depth). A network that found the far-plane solution (every disparity 0, depth = max_depth: no
    parallax, so warping changes nothing and the photometric loss no longer depends on depth) has
    ``log_std`` ~ 0 and ``at_max`` ~ 1."""
    return {k: float(v) for k, v in depth_spread_tensors(depth, min_depth, max_depth).items()}


def depth_spread_tensors(depth: torch.Tensor, min_depth: float, max_depth: float) -> dict[str, torch.Tensor]:
    """:func:`depth_spread` as 0-d tensors on ``depth``'s device (no host synchronisation: per-step logging)."""
    d = depth.detach().float().reshape(depth.shape[0], -1).clamp_min(1e-12)
    return {
        "log_std": d.log().std(dim=1, unbiased=False).median(),
        "at_max": (d >= max_depth * (1.0 - SATURATION)).float().mean(),
        "at_min": (d <= min_depth * (1.0 + SATURATION)).float().mean(),
        "depth_med": d.median(),
    }


def is_collapsed(spread: dict[str, float]) -> bool:
    """The depth of :func:`depth_spread` is (nearly) constant or stuck at the far / near plane."""
    return (
        spread["log_std"] < COLLAPSE_LOG_STD
        or spread["at_max"] > COLLAPSE_SATURATED
        or spread["at_min"] > COLLAPSE_SATURATED
    )


def collapse_message(spread: dict[str, float], where: str) -> str:
    """A warning for the user when :func:`is_collapsed` holds."""
    return (
        f"{where}: the trained depth is (nearly) constant (per-image log-depth std {spread['log_std']:.3g}, "
        f"{spread['at_max']:.0%} of pixels at the far plane, {spread['at_min']:.0%} at the near plane): the depth "
        "network collapsed and its depth has no structure. Usual cause: too little parallax between the frames "
        "it compares (slow flight, far scene, low resolution). Train again with a larger model.stride (or "
        "model.stride 0: chosen from the measured image motion) or a higher resolution"
    )


def photometric_error(a: torch.Tensor, b: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """Per-pixel ``w * (1 - SSIM) / 2 + (1 - w) * |a - b|``, channel mean: (B, 1, H, W). SSIM: kornia (3x3)."""
    l1 = (a - b).abs().mean(1, keepdim=True)
    if ssim_weight <= 0:
        return l1
    ssim = kornia.losses.ssim_loss(a, b, window_size=3, reduction="none").mean(1, keepdim=True)  # (1 - SSIM) / 2
    return ssim_weight * ssim + (1.0 - ssim_weight) * l1


def warp(
    source: torch.Tensor, depth_target: torch.Tensor, T_source_target: torch.Tensor, K: torch.Tensor
) -> torch.Tensor:
    """The source image resampled onto the target pixel grid with the target depth (kornia; intrinsics in the
    integer-pixel-centre convention of :class:`~pose2rgbd.geometry.camera.PinholeCamera`, like kornia's)."""
    return kornia.geometry.depth.warp_frame_depth(source, depth_target, T_source_target, K)


SPARSE_SCALE = 0.1  # Cauchy scale of the sparse term: a 10 % depth error is where a point starts to count less


def sparse_depth_loss(depth: torch.Tensor, sparse: torch.Tensor, scale: float = SPARSE_SCALE) -> torch.Tensor:
    """Robust error of ``depth`` (B, 1, H, W) against sparse known depths ``sparse`` (B, P, 4): pixel x, y
    (integer-pixel-centre convention), depth (same units) and weight (0 for padding). Per point the Cauchy
    loss ``log(1 + (r / scale)^2)`` of the log-depth error ``r`` (robust to a wrong triangulation), weighted
    mean over the points; 0 (with a gradient path) when a batch has none."""
    H, W = depth.shape[-2:]
    w = sparse[..., 3].to(depth.dtype)
    if not bool((w > 0).any()):
        return depth.sum() * 0.0
    grid = torch.stack([2.0 * sparse[..., 0] / max(W - 1, 1) - 1.0, 2.0 * sparse[..., 1] / max(H - 1, 1) - 1.0], -1)
    d = F.grid_sample(depth, grid[:, :, None].to(depth.dtype), mode="bilinear", padding_mode="border",
                      align_corners=True)[:, 0, :, 0]  # fmt: skip
    z = sparse[..., 2].to(depth.dtype).clamp_min(1e-6)
    r = torch.log(d.clamp_min(1e-6)) - torch.log(z)
    rho = torch.log1p((r / scale) ** 2)
    return (w * rho).sum() / w.sum()


class SelfSupDepthNet(ModelBase):
    """Depth + relative pose, trained by view synthesis (see the module docstring).

    Batches: :class:`pose2rgbd.dataset.sequences.SequenceDataset` items. ``get_outputs`` returns the
    disparities ``disp/0..3``, the depth ``depth`` at the input size and the poses ``T`` (B, 2, 4, 4)
    (``T_source_target`` used for each source) and ``T_net`` (the pose network's)."""

    kind = "selfsup-depth"

    def __init__(self, config: SelfSupDepthConfig) -> None:
        super().__init__()
        self.config = config
        self.depth_net = DepthNet(config.channels)
        self.pose_net = PoseNet(config.pose_channels)
        # the frame stride training used (config.stride, or the automatic choice for 0); 0: not recorded
        self.register_buffer("train_stride", torch.zeros((), dtype=torch.long))
        # pose_source metric: metres per network depth unit (the depth is metric by construction); 0: unscaled
        self.register_buffer("metres_per_unit", torch.zeros((), dtype=torch.float64))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before the stride was recorded: training used config.stride (then always >= 1)
        state_dict.setdefault(prefix + "train_stride", torch.tensor(max(1, self.config.stride), dtype=torch.long))
        state_dict.setdefault(prefix + "metres_per_unit", torch.zeros((), dtype=torch.float64))  # before metric poses
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def init_depth(self, depth: float) -> None:
        """Set the disparity heads' bias so that an untrained network predicts about ``depth`` (network units)
        everywhere: training against metric poses starts near the scene's scale instead of the sigmoid's
        midpoint (a depth of ~2 * min_depth, where every warp leaves the image and only auto-masking remains)."""
        c = self.config
        lo, hi = 1.0 / c.max_depth, 1.0 / c.min_depth
        disp = min(max((1.0 / depth - lo) / (hi - lo), 1e-4), 1 - 1e-4)
        for head in self.depth_net.heads.values():
            assert isinstance(head, nn.Conv2d) and head.bias is not None
            head.bias.fill_(float(np.log(disp / (1.0 - disp))))

    @property
    def metric_unit(self) -> float:
        """Metres per network depth unit when trained against metric poses (pose_source metric), else 0."""
        u = self.metres_per_unit
        assert isinstance(u, torch.Tensor)
        return float(u)

    @property
    def used_stride(self) -> int:
        """The stride between the frames the pose network learnt from (>= 1)."""
        stride = self.train_stride
        assert isinstance(stride, torch.Tensor)
        return max(1, int(stride) or self.config.stride)

    def optimizer_defaults(self) -> dict[str, dict[str, Any]]:
        # the monodepth2 family trains with Adam at 1e-4; 2e-4 suits the short per-flight budgets here
        return {"model": {"optimizer": "adam", "lr": 2e-4, "weight_decay": 0.0}}

    # -- inference ----------------------------------------------------------------------------------------
    def depth(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) depth in network units."""
        c = self.config
        return disp_to_depth(self.depth_net(images)[0], c.min_depth, c.max_depth)

    def relative_pose(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``T_source_target`` (B, 4, 4) from the pose network (network units)."""
        return self.pose_net(target, source)

    # -- training -----------------------------------------------------------------------------------------
    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        tgt, srcs = batch["target"], batch["sources"]
        disps = self.depth_net(tgt)
        n_src = srcs.shape[1]
        fixed = self.config.pose_source == "metric" and "fix_T" in batch
        if fixed and bool(batch["fix_ok"].all()):  # every pose known: the pose network is not needed
            T_net = batch["fix_T"].to(tgt.dtype)
        else:
            T_net = torch.stack([self.pose_net(tgt, srcs[:, j]) for j in range(n_src)], 1)
        T = T_net
        if fixed:  # the known metric poses (network units), no gradient; the pose network only where none is known
            T = torch.where(batch["fix_ok"][:, :, None, None], batch["fix_T"].to(T_net.dtype), T_net)
        if self.config.pose_source == "essential" and "ess_T" in batch:
            ess, ok = batch["ess_T"].to(T_net.dtype), batch["ess_ok"]
            length = T_net[:, :, :3, 3].norm(dim=-1, keepdim=True)  # (B, S, 1)
            T_ess = ess.clone()
            T_ess[:, :, :3, 3] = ess[:, :, :3, 3] * length
            T = torch.where(ok[:, :, None, None], T_ess, T_net)
        out = {f"disp/{s}": d for s, d in enumerate(disps)}
        out["T"] = T
        out["T_net"] = T_net
        return out

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        tgt, srcs, K = batch["target"], batch["sources"], batch["K"]
        H, W = tgt.shape[-2:]
        n_src = srcs.shape[1]
        identity = None
        if c.automask:
            identity = torch.cat([photometric_error(srcs[:, j], tgt, c.ssim_weight) for j in range(n_src)], 1)
            identity = identity + 1e-5 * torch.randn_like(identity)  # breaks ties towards the warped frames
        photo = tgt.new_zeros(())
        smooth = tgt.new_zeros(())
        for s in range(c.scales):
            disp = outputs[f"disp/{s}"]
            disp_full = disp if s == 0 else F.interpolate(disp, (H, W), mode="bilinear", align_corners=False)
            depth = disp_to_depth(disp_full, c.min_depth, c.max_depth)
            reproj = torch.cat(
                [photometric_error(warp(srcs[:, j], depth, outputs["T"][:, j], K), tgt, c.ssim_weight)
                 for j in range(n_src)], 1,
            )  # fmt: skip
            err = reproj if identity is None else torch.cat([reproj, identity], 1)
            photo = photo + err.min(1).values.mean()
            if c.smoothness_weight > 0:
                img_s = tgt if s == 0 else F.interpolate(tgt, disp.shape[-2:], mode="area")
                nd = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
                smooth = smooth + kornia.losses.inverse_depth_smoothness_loss(nd, img_s.to(nd.dtype)) / (2**s)
        losses = {"photometric": photo / c.scales}
        if c.pose_source == "metric" and c.sparse_weight > 0 and "sparse" in batch:
            depth0 = disp_to_depth(outputs["disp/0"], c.min_depth, c.max_depth)
            losses["sparse"] = c.sparse_weight * sparse_depth_loss(depth0, batch["sparse"])
        if c.smoothness_weight > 0:
            losses["smoothness"] = c.smoothness_weight * smooth / c.scales
        if c.velocity_weight > 0:
            gd = batch["gps_dist"]
            t_len = outputs["T_net"][:, :, :3, 3].norm(dim=-1)
            ok = torch.isfinite(gd)
            if bool(ok.any()):
                losses["velocity"] = c.velocity_weight * (t_len[ok] - gd[ok]).abs().mean()
            else:
                losses["velocity"] = t_len.sum() * 0.0
        return losses

    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        t = outputs["T_net"][:, :, :3, 3].norm(dim=-1)
        c = self.config
        depth = disp_to_depth(outputs["disp/0"].detach(), c.min_depth, c.max_depth)
        sp = depth_spread_tensors(depth, c.min_depth, c.max_depth)
        return {"t_len": t.mean().detach(), "depth_log_std": sp["log_std"], "depth_at_max": sp["at_max"],
                "depth_med": sp["depth_med"]}  # fmt: skip


def build_model(config: SelfSupDepthConfig) -> SelfSupDepthNet:
    return SelfSupDepthNet(config)

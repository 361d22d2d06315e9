"""Geometry-aware training terms of Pose2RGBD (beyond the paper; its Sec. 4 "next steps"), all in torch.

* :func:`perturb_poses`: small random pose perturbations ``T_world_cam @ T_cam_new`` (radius in metres and
  degrees), the nearby poses the terms below render.
* :func:`backward_warp`: a source view pulled into a target view through the *target's* metric depth and the
  known relative pose (kornia: ``depth_to_3d_v2`` + ``transform_points`` + ``project_points`` + ``grid_sample``),
  with the valid mask: in the source frustum, in front of the source camera and not occluded (the source depth
  at the landing pixel agrees with the point's depth in the source camera within a relative tolerance).
* :func:`forward_splat`: a real RGB-D frame pushed into another pose with its own depth and a z-buffer (the
  target of pose-space augmentation; a query pose has no depth of its own to pull with, so the backward warp does
  not apply). Written by hand because kornia / OpenCV have no z-buffered forward splat; it is the torch twin of
  :func:`pose2rgbd.evaluation.reprojection.splat`.
* :func:`photometric_error`: per-pixel ``alpha * (1 - SSIM) / 2 + (1 - alpha) * L1`` (kornia's SSIM map).

Depths are metres along the optical axis (REP-103 optical frame, z forward); ``+inf`` is sky / beyond range,
NaN invalid. Poses are ``(B, 4, 4)`` float64 ``T_world_cam``; ``K`` is ``(B, 3, 3)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry.camera.perspective import project_points
from kornia.geometry.conversions import axis_angle_to_rotation_matrix, normalize_pixel_coordinates
from kornia.geometry.depth import depth_to_3d_v2
from kornia.geometry.linalg import transform_points
from kornia.metrics import ssim

EPS_Z = 1e-3  # points closer than this (m) to a camera plane are dropped


def perturb_poses(
    T_world_cam: torch.Tensor, radius_m: float, radius_deg: float, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T_world_new (B, 4, 4), T_cam_new (B, 4, 4))``: each pose moved by a random offset in its own camera
    frame -- a translation of uniform direction and length in [0, radius_m], a rotation about a uniform axis by
    an angle in [0, radius_deg] degrees."""
    B = T_world_cam.shape[0]
    dev, dt = T_world_cam.device, T_world_cam.dtype

    def unit(n: int) -> torch.Tensor:
        v = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    t = unit(B) * torch.rand(B, 1, generator=generator, dtype=torch.float64) * float(radius_m)
    ang = torch.rand(B, 1, generator=generator, dtype=torch.float64) * math.radians(float(radius_deg))
    R = axis_angle_to_rotation_matrix((unit(B) * ang).float()).double()
    delta = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    delta[:, :3, :3] = R
    delta[:, :3, 3] = t
    delta = delta.to(device=dev, dtype=dt)
    return T_world_cam @ delta, delta


def _project(depth: torch.Tensor, K: torch.Tensor, T_dst_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of a ``(B, 1, H, W)`` depth map (finite values) -> ``(uv (B, H*W, 2), z (B, H*W))`` in the
    destination camera."""
    B, _, H, W = depth.shape
    pts = depth_to_3d_v2(depth[:, 0], K.to(depth.dtype))  # (B, H, W, 3) in the source camera
    p = transform_points(T_dst_src.to(depth.dtype), pts.reshape(B, H * W, 3))
    z = p[..., 2]
    # points behind / on the camera plane are projected as if just in front (finite, masked out by the callers)
    p_front = torch.cat([p[..., :2], z.clamp_min(EPS_Z)[..., None]], dim=-1)
    uv = project_points(p_front, K[:, None].to(depth.dtype))
    return uv, z


def backward_warp(
    src: torch.Tensor,
    src_depth: torch.Tensor,
    tgt_depth: torch.Tensor,
    T_src_tgt: torch.Tensor,
    K: torch.Tensor,
    *,
    occlusion_tol: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pull the source view into the target view through the target's depth.

    Args:
        src: ``(B, C, H, W)`` source image (any channels).
        src_depth: ``(B, 1, H, W)`` source depth in metres (finite; cap sky first).
        tgt_depth: ``(B, 1, H, W)`` target depth in metres (finite), the geometry that is warped.
        T_src_tgt: ``(B, 4, 4)`` target camera -> source camera.
        K: ``(B, 3, 3)`` intrinsics (both views).
        occlusion_tol: a pixel is visible when ``|src_depth(landing) - z_src| <= occlusion_tol * z_src``.

    Returns:
        ``(warped (B, C, H, W), z_src (B, 1, H, W)`` the target points' depth in the source camera,
        ``src_depth_at (B, 1, H, W)`` the source depth sampled where they land, ``valid (B, 1, H, W)`` bool).
        Differentiable in ``src``, ``src_depth`` and ``tgt_depth``.
    """
    B, _, H, W = tgt_depth.shape
    uv, z = _project(tgt_depth, K, T_src_tgt.to(tgt_depth.dtype))
    grid = normalize_pixel_coordinates(uv, H, W).reshape(B, H, W, 2)
    both = torch.cat([src, src_depth.to(src.dtype)], dim=1)
    sampled = F.grid_sample(both, grid.to(src.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    warped, src_at = sampled[:, :-1], sampled[:, -1:]
    z = z.reshape(B, 1, H, W)
    g = grid.detach().permute(0, 3, 1, 2)
    inside = (g.abs() <= 1.0).all(dim=1, keepdim=True) & (z.detach() > EPS_Z)
    agree = (src_at.detach() - z.detach()).abs() <= occlusion_tol * z.detach().abs()
    return warped, z, src_at, inside & agree & torch.isfinite(tgt_depth)


@torch.no_grad()
def forward_splat(
    rgb: torch.Tensor, depth: torch.Tensor, T_dst_src: torch.Tensor, K: torch.Tensor, *, far_m: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Push real RGB-D frames into other poses with a z-buffer (nearest point wins each pixel).

    ``rgb`` ``(B, C, H, W)``, ``depth`` ``(B, 1, H, W)`` metres (NaN / <= 0 skipped; ``+inf`` = sky, splatted as a
    point ``1000 * far_m`` away so only the rotation moves it, and written back as ``+inf``). Returns
    ``(rgb (B, C, H, W), depth (B, 1, H, W) NaN in holes, valid (B, 1, H, W) bool)``.
    """
    B, C, H, W = rgb.shape
    d = depth.double()
    sky = torch.isposinf(d)
    ok_src = (torch.isfinite(d) & (d > 0)) | sky
    d = torch.where(sky, torch.full_like(d, 1000.0 * float(far_m)), torch.where(ok_src, d, torch.ones_like(d)))
    uv, z = _project(d, K.double(), T_dst_src.double())
    u = torch.round(uv[..., 0]).long()
    v = torch.round(uv[..., 1]).long()
    ok = (ok_src.reshape(B, H * W) & (z > EPS_Z) & (u >= 0) & (u < W) & (v >= 0) & (v < H)).reshape(-1)
    # Every source point keeps its place in flat arrays of fixed length: a point that lands on no pixel is sent to
    # a slot of its own past the images (n + its index), dropped at the end. No boolean selection, whose length the
    # host must read back before it can go on (on a GPU a wait for every queued kernel: seven per call before), and
    # no two atomics of the scatters below on one address but those of one pixel (one shared slot for all of them
    # serialized the GPU's atomics: docs/serving.md, "Measured again").
    n = B * H * W
    point = torch.arange(n, device=rgb.device)
    b = torch.arange(B, device=rgb.device)[:, None]
    key = torch.where(ok, (b * H * W + v.clamp(0, H - 1) * W + u.clamp(0, W - 1)).reshape(-1), n + point)
    zf = z.reshape(-1)
    zbuf = torch.full((2 * n,), float("inf"), dtype=z.dtype, device=z.device)
    zbuf.scatter_reduce_(0, key, zf, reduce="amin")
    near = ok & (zf <= zbuf[key])  # the nearest points of each pixel
    # ties (equal depth: a plane square to the view, seen by several source pixels) go to the last source pixel,
    # chosen here rather than left to the order of the writes below, which many CPU threads and CUDA do not keep:
    # ties no longer depend on the device or the thread count, and the nearest surface is the numba warp's
    # (hybrid/warp.py; its per-keyframe points for `warp_colour blend` compare depth in float32, this in float64)
    src = point % (H * W)
    last = torch.full((2 * n,), -1, dtype=src.dtype, device=src.device)
    last.scatter_reduce_(0, torch.where(near, key, n + point), src, reduce="amax")
    kw = torch.where(near & (src == last[key]), key, n + point)  # one winner per pixel; the rest to their own slots
    cols = rgb.reshape(B, C, H * W).permute(0, 2, 1).reshape(n, C)
    dz = torch.where(sky.reshape(-1), torch.full_like(zf, float("inf")), zf)
    out_rgb = torch.zeros(2 * n, C, dtype=rgb.dtype, device=rgb.device)
    out_d = torch.full((2 * n,), float("nan"), dtype=depth.dtype, device=depth.device)
    valid = torch.zeros(2 * n, dtype=torch.bool, device=rgb.device)
    out_rgb[kw] = cols  # each index once: a pixel's winner, or a point's own slot
    out_d[kw] = dz.to(depth.dtype)
    valid.index_fill_(0, kw, True)  # (not valid[kw] = True: that copies the True from the host, a CUDA graph cannot)
    out_rgb, out_d, valid = out_rgb[:n], out_d[:n], valid[:n]
    return (
        out_rgb.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous(),
        out_d.reshape(B, 1, H, W),
        valid.reshape(B, 1, H, W),
    )


def photometric_error(a: torch.Tensor, b: torch.Tensor, *, ssim_share: float) -> torch.Tensor:
    """Per-pixel ``(B, 1, H, W)`` error of two images in [-1, 1]: ``ssim_share * (1 - SSIM) / 2 +
    (1 - ssim_share) * L1`` (SSIM over 3x3 windows on [0, 1] images, channel mean)."""
    err = (a - b).abs().mean(dim=1, keepdim=True)
    if ssim_share > 0:
        s = ssim((a + 1) * 0.5, (b + 1) * 0.5, window_size=3).mean(dim=1, keepdim=True)
        err = ssim_share * (1 - s).clamp(0, 2) * 0.5 + (1 - ssim_share) * err
    return err


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` (broadcast over channels); 0 (with a gradient path) when nothing is valid."""
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)

"""Torch forward warp of several keyframes into one query camera each, z-buffered across the keyframes.

Each keyframe is pushed into its query camera with its own metric depth by
:func:`pose2rgbd.methods.pose2rgbd.geometry_losses.forward_splat` (hand-written: kornia's
``warp_frame_depth`` and ``cv2.remap`` pull source pixels through the *target's* depth, which a query pose does
not have; a z-buffered forward splat needs a scatter-min, ``scatter_reduce(amin)``, then the colour of the point
whose depth equals the minimum). It runs on CPU and CUDA. The per-keyframe results are then merged by the same
rule across keyframes: per pixel the nearest surface wins, ties go to the keyframe nearest in pose (first in
order), exactly like the numpy baseline :func:`pose2rgbd.evaluation.reprojection.splat`.

Depth: metres along optical z; NaN / <= 0 never splat; ``+inf`` (sky) splats as a very far point (it moves only
with the rotation) and lands as ``+inf`` -- the numpy baseline leaves sky as holes instead (and fills them from the
nearest frame), so the two agree wherever the sources have finite depth.
"""

from __future__ import annotations

import torch

from pose2rgbd.methods.pose2rgbd.geometry_losses import forward_splat


@torch.no_grad()
def splat_keyframes(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    T_query_src: torch.Tensor,
    K: torch.Tensor,
    *,
    far_m: float,
    usable: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp ``k`` keyframes into each of ``B`` query cameras and z-buffer them together.

    Args:
        rgb: ``(B, k, C, H, W)`` keyframe images (any float range).
        depth: ``(B, k, 1, H, W)`` keyframe depth in metres (NaN invalid, +inf sky).
        T_query_src: ``(B, k, 4, 4)`` keyframe camera -> query camera.
        K: ``(3, 3)`` intrinsics of keyframes and queries (one camera).
        far_m: where sky is splatted (``1000 * far_m``; see ``forward_splat``).
        usable: ``(B, k)`` bool, keyframes that may splat (others are ignored); default all.

    Returns:
        ``(rgb (B, C, H, W) 0 in holes, depth (B, 1, H, W) NaN in holes / +inf sky, valid (B, 1, H, W) bool,
        hits (B, 1, H, W) float: how many keyframes landed a point on the pixel)``.
    """
    B, k, C, H, W = rgb.shape
    d = depth.reshape(B * k, 1, H, W).double()
    if usable is not None:
        d = torch.where(usable.reshape(B * k, 1, 1, 1), d, torch.full_like(d, float("nan")))
    Kb = K.to(device=rgb.device, dtype=torch.float64)[None].expand(B * k, 3, 3)
    w_rgb, w_d, w_valid = forward_splat(
        rgb.reshape(B * k, C, H, W), d, T_query_src.reshape(B * k, 4, 4).double(), Kb, far_m=far_m
    )
    w_rgb = w_rgb.reshape(B, k, C, H, W)
    w_d = w_d.reshape(B, k, 1, H, W)
    w_valid = w_valid.reshape(B, k, 1, H, W)
    # z-buffer across keyframes: holes lose to sky, sky loses to any finite surface; argmin keeps the first on ties
    z = torch.where(w_valid, torch.where(torch.isinf(w_d), torch.full_like(w_d, 1e30), w_d), torch.full_like(w_d, 1e38))
    best = z.argmin(dim=1, keepdim=True)  # (B, 1, 1, H, W)
    out_rgb = torch.gather(w_rgb, 1, best.expand(B, 1, C, H, W))[:, 0]
    out_d = torch.gather(w_d, 1, best)[:, 0]
    valid = w_valid.any(dim=1)
    hits = w_valid.sum(dim=1).to(rgb.dtype)
    out_rgb = torch.where(valid, out_rgb, torch.zeros_like(out_rgb))
    out_d = torch.where(valid, out_d, torch.full_like(out_d, float("nan")))
    return out_rgb, out_d.to(depth.dtype if depth.dtype.is_floating_point else torch.float32), valid, hits

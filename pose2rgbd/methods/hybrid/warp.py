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

import numpy as np
import torch
from numba import njit

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


# ---------------------------------------------------------------------------------------------- the serving warp
# Why a numba kernel on CPU: the torch splat above runs each keyframe as a chain of full-image tensor ops in float64
# (project, round, mask, scatter-min, gather the winners, scatter the colours), then merges the keyframes with
# another argmin / gather: about 20 passes over k x H x W values plus their allocations, 70 % of the CPU forward at
# 256x256. The kernel below does the same arithmetic in one pass per keyframe with a running z-buffer across
# keyframes and writes only which keyframe pixel won each query pixel; the colours are then gathered once.
_jit = njit(cache=True, error_model="numpy", nogil=True)
EPS_Z = 1e-3  # as forward_splat: points closer than this to the query camera plane are dropped


@_jit
def _splat_merge_kernel(
    depth: np.ndarray,  # (B, k, H, W) float32 metres (NaN / <= 0 invalid, +inf sky)
    T: np.ndarray,  # (B, k, 4, 4) float64 keyframe -> query
    K: np.ndarray,  # (3, 3) float64
    usable: np.ndarray,  # (B, k) bool
    sky_m: float,  # where sky is splatted (forward_splat: 1000 * far_m)
    src: np.ndarray,  # out (B, H, W) int64: j * H * W + pixel of the winning keyframe point, -1 none
    z_out: np.ndarray,  # out (B, H, W) float32: the winner's depth in the query (+inf sky), NaN none
    valid: np.ndarray,  # out (B, H, W) bool
    hits: np.ndarray,  # out (B, H, W) float32: keyframes that landed a point on the pixel
) -> None:
    B, k, H, W = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    best_z = np.empty(H * W, np.float64)
    best_cls = np.empty(H * W, np.int8)  # 0 surface, 1 sky, 2 nothing: a surface beats sky beats a hole
    best_kf = np.empty(H * W, np.int64)
    mark = np.empty(H * W, np.int64)
    for b in range(B):
        best_z[:] = np.inf
        best_cls[:] = 2
        best_kf[:] = -1
        mark[:] = -1
        for j in range(k):
            if not usable[b, j]:
                continue
            R = T[b, j]
            for v in range(H):
                yn = (v - cy) / fy
                for u in range(W):
                    d = np.float64(depth[b, j, v, u])
                    sky = d == np.inf
                    if sky:
                        d = sky_m
                    elif not (d > 0.0 and d < np.inf):
                        continue
                    xs = (u - cx) / fx * d
                    ys = yn * d
                    z = R[2, 0] * xs + R[2, 1] * ys + R[2, 2] * d + R[2, 3]
                    if not z > EPS_Z:
                        continue
                    px = R[0, 0] * xs + R[0, 1] * ys + R[0, 2] * d + R[0, 3]
                    py = R[1, 0] * xs + R[1, 1] * ys + R[1, 2] * d + R[1, 3]
                    fu = np.rint(fx * (px / z) + cx)  # half to even, as torch.round
                    fv = np.rint(fy * (py / z) + cy)
                    if not (fu >= 0 and fu < W and fv >= 0 and fv < H):
                        continue
                    q = int(fv) * W + int(fu)
                    if mark[q] != j:
                        mark[q] = j
                        hits[b, q // W, q % W] += 1.0
                    c = 1 if sky else 0
                    bc = best_cls[q]
                    same = best_kf[q] == j
                    # as splat_keyframes: within a keyframe the nearest point (ties: the later one, as the scatter);
                    # across keyframes a surface beats sky, the nearer surface wins (ties: the earlier keyframe),
                    # and all sky is equally far (the earlier keyframe's sky stays)
                    if c < bc or (c == bc and ((z < best_z[q] and (same or c == 0)) or (z == best_z[q] and same))):
                        best_cls[q] = c
                        best_z[q] = z
                        best_kf[q] = j
                        src[b, q // W, q % W] = j * H * W + v * W + u
                        z_out[b, q // W, q % W] = np.inf if sky else np.float32(z)
        first = -1
        for j in range(k):
            if usable[b, j]:
                first = j
                break
        for q in range(H * W):
            v, u = q // W, q % W
            if best_cls[q] < 2:
                valid[b, v, u] = True
            elif first >= 0:  # a hole: the nearest usable keyframe's own pixel (the reprojection baseline's fill)
                src[b, v, u] = first * H * W + q
                z_out[b, v, u] = depth[b, first, v, u]


def warp_gathered(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    T_query_kf: torch.Tensor,
    K: torch.Tensor,
    usable: torch.Tensor,
    *,
    depth_min_m: float,
    depth_max_m: float,
    kernel: str = "auto",
) -> dict[str, torch.Tensor]:
    """The reprojection answer of ``k`` selected keyframes per query, as the network part takes it.

    Args:
        rgb: ``(B, k, H, W, 3)`` uint8 keyframe images, nearest keyframe first.
        depth: ``(B, k, H, W)`` keyframe depth in metres (any float dtype; NaN invalid, +inf sky).
        T_query_kf: ``(B, k, 4, 4)`` keyframe camera -> query camera.
        K: ``(3, 3)`` intrinsics; usable: ``(B, k)`` bool.
        depth_min_m, depth_max_m: the model's depth range (normalization; sky splats at ``1000 * depth_max_m``).

    Returns ``rgb`` ``(B, 3, H, W)`` in [-1, 1], ``depth`` ``(B, 1, H, W)`` normalized (holes: the nearest
    usable keyframe's own pixel; NaN -> 1), ``valid`` ``(B, 1, H, W)`` bool, ``hits`` ``(B, 1, H, W)`` / k. On
    CPU the numba kernel above, elsewhere (CUDA) :func:`splat_keyframes` on the tensors' device: the same answer
    up to float64 rounding at exact half pixels (``kernel``: ``auto``, or ``numba`` / ``torch`` to choose)."""
    if kernel not in ("auto", "numba", "torch"):
        raise ValueError(f"kernel {kernel!r} is not auto, numba or torch")
    B, k, H, W, C = rgb.shape
    dev = rgb.device
    span = depth_max_m - depth_min_m

    def normalize(d: torch.Tensor) -> torch.Tensor:  # DepthNormalizer.normalize, NaN -> 1
        n = 2.0 * (d.clamp(depth_min_m, depth_max_m) - depth_min_m) / span - 1.0
        return torch.where(torch.isnan(n), torch.ones_like(n), n)

    if kernel == "numba" or (kernel == "auto" and dev.type == "cpu"):
        if dev.type != "cpu":
            raise ValueError("the numba warp runs on CPU tensors; use kernel auto or torch on CUDA")
        src = torch.full((B, H, W), -1, dtype=torch.int64)
        z = torch.full((B, H, W), float("nan"), dtype=torch.float32)
        valid = torch.zeros((B, H, W), dtype=torch.bool)
        hits = torch.zeros((B, H, W), dtype=torch.float32)
        _splat_merge_kernel(
            depth.float().contiguous().numpy(),
            T_query_kf.double().contiguous().numpy(),
            K.double().numpy(),
            usable.contiguous().numpy(),
            1000.0 * float(depth_max_m),
            src.numpy(),
            z.numpy(),
            valid.numpy(),
            hits.numpy(),
        )
        flat = rgb.reshape(B, k * H * W, C)
        idx = src.clamp_min(0).reshape(B, H * W, 1).expand(B, H * W, C)
        col = torch.gather(flat, 1, idx).reshape(B, H, W, C).permute(0, 3, 1, 2)
        out_rgb = col.float().div_(127.5).sub_(1.0)
        out_rgb = torch.where((src >= 0)[:, None], out_rgb, torch.zeros_like(out_rgb))
        return {
            "rgb": out_rgb.contiguous(),
            "depth": normalize(z[:, None]),
            "valid": valid[:, None],
            "hits": hits[:, None] / float(k),
        }
    f_rgb = rgb.permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0)  # (B, k, 3, H, W)
    f_depth = depth.float()[:, :, None]
    w_rgb, w_d, valid_t, hits_t = splat_keyframes(f_rgb, f_depth, T_query_kf, K, far_m=depth_max_m, usable=usable)
    first = usable.int().argmax(dim=1)
    any_use = usable.any(dim=1)[:, None, None, None]
    b = torch.arange(B, device=dev)
    near_rgb = torch.where(any_use, f_rgb[b, first], torch.zeros_like(f_rgb[:, 0]))
    near_d = torch.where(any_use, f_depth[b, first], torch.full_like(f_depth[:, 0], float("nan")))
    return {
        "rgb": torch.where(valid_t, w_rgb, near_rgb),
        "depth": normalize(torch.where(valid_t, w_d.float(), near_d)),
        "valid": valid_t,
        "hits": hits_t / float(k),
    }

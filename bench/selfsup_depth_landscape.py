"""The view-synthesis loss at the simulator's true depth and poses against the far-plane solution, per frame
stride (no training): how strongly the loss prefers real depth over "no parallax" (depth -> infinity, the
rotation kept). Also prints the dataset's median image motion and the automatic stride.

    nice -n 10 .venv/bin/python bench/selfsup_depth_landscape.py --dataset /tmp/ssd/sim/dataset
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--size", type=int, nargs=2, default=(128, 96), metavar=("W", "H"))
    ap.add_argument("--source", type=int, default=0)
    ap.add_argument("--targets", type=int, default=60)
    ap.add_argument("--strides", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    a = ap.parse_args()

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.sequences import auto_stride, load_sequence_frames
    from pose2rgbd.methods.selfsup_depth.net import photometric_error, warp

    torch.set_num_threads(1)
    ds = Dataset(a.dataset)
    W, H = a.size
    fr = load_sequence_frames(ds, W, H)
    K = torch.tensor(fr.camera.K, dtype=torch.float32)[None]
    f = ds.frames
    stride, motion = auto_stride(fr)
    print(f"median image motion {motion:.3f} px per frame at {W}x{H}: automatic stride {stride}")
    idx = np.flatnonzero(f.source_id == a.source)

    def img(i: int) -> torch.Tensor:
        return torch.from_numpy(fr.rgb[i]).permute(2, 0, 1).float().div(255)[None]

    for s in a.strides:
        cs = idx[s:-s][:: max(1, len(idx) // a.targets)]
        gt_l, far_l, win = [], [], []
        for c in cs:
            g = ds.read_depth(int(c)).astype(np.float32)
            g = np.where(np.isfinite(g) & (g > 0), g, 1e4)
            D = torch.from_numpy(cv2.resize(g, (W, H), interpolation=cv2.INTER_NEAREST))[None, None]
            tgt = img(int(c))
            ident, gt, far = [], [], []
            for j in (c - s, c + s):
                T = torch.from_numpy(np.linalg.inv(f.T_world_cam[j]) @ f.T_world_cam[c]).float()[None]
                src = img(int(j))
                ident.append(photometric_error(src, tgt))
                gt.append(photometric_error(warp(src, D, T, K), tgt))
                far.append(photometric_error(warp(src, torch.full_like(D, 1e6), T, K), tgt))
            i_, g_, f_ = torch.cat(ident, 1), torch.cat(gt, 1), torch.cat(far, 1)
            gt_l.append(float(torch.cat([g_, i_], 1).min(1).values.mean()))
            far_l.append(float(torch.cat([f_, i_], 1).min(1).values.mean()))
            best_other = torch.minimum(i_.min(1).values, f_.min(1).values)
            win.append(float((g_.min(1).values < best_other).float().mean()))
        print(f"stride {s}: loss at the true depth {np.mean(gt_l):.4f}, at the far plane {np.mean(far_l):.4f}; "
              f"pixels where the true depth beats both {np.mean(win):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()

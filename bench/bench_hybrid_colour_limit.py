"""Where a trained hybrid's RGB error lives (not a test): its test frames' RGB MAE split into pixels a keyframe point
landed on and holes, for the final output, the warped view the fill network starts from (reprojection's answer)
and the pose-only decoder's image, plus the holes' error when they take the background colour
(:func:`pose2rgbd.methods.hybrid.hole_depth.background_colour`, the rule of ``model.hole_rgb background``).

    .venv/bin/python bench/bench_hybrid_colour_limit.py --checkpoint RUN/best.pt --dataset D [--frames 300]

``--dataset``: the dataset the checkpoint was trained on; its test frames are those of the checkpoint's split
(same seed and fractions), ``--frames`` of them evenly spread as the evaluation spreads them. Prints one Markdown
table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pose2rgbd, not an installed one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--frames", type=int, default=300)
    args = p.parse_args()
    import torch

    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.dataset.splits import split_from_config
    from pose2rgbd.evaluation.plots import evenly_spaced
    from pose2rgbd.methods.hybrid.hole_depth import background_colour, background_fill_with_source
    from pose2rgbd.models import load_checkpoint

    ds = Dataset(args.dataset)
    ck = load_checkpoint(args.checkpoint, expect_fingerprint=ds.fingerprint())
    m = ck.model.eval()
    cache = build_cache(ds, m.image_hw[0], progress=False)
    test = split_from_config(cache.source_id, cache.stamp_ns, ck.train_config).test
    if len(test) > args.frames:
        test = test[evenly_spaced(len(test), args.frames)]  # the frames `pose2rgbd evaluate --max-frames` takes
    T = cache.T_world_cam[test]
    gt_all = torch.from_numpy(np.asarray(cache.rgb[test])).float().permute(0, 3, 1, 2) / 127.5 - 1
    sums: dict[str, list[float]] = {}  # name -> [error on warped pixels, error in holes, warped count, hole count]
    with torch.inference_mode():
        for i in range(0, len(test), 32):
            x, _ = m.poses_to_input(T[i : i + 32])
            out, w = m(x), m.warp(T[i : i + 32])
            _, source = background_fill_with_source(w["depth"], w["valid"])
            images = {
                "final output": out["rgb"].clamp(-1, 1),
                "warped view (the fill's input and base)": w["rgb"],
                "holes given the background colour": background_colour(w["rgb"], source),
            }
            if "decoder_rgb" in out:  # a model with a pose decoder (model.decoder true)
                images["decoder alone"] = out["decoder_rgb"].clamp(-1, 1)
            v = w["valid"].expand(-1, 3, -1, -1)
            for name, img in images.items():
                e = (img - gt_all[i : i + 32]).abs() * 127.5
                a = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0])
                a[0] += float(e[v].sum())
                a[1] += float(e[~v].sum())
                a[2] += float(v.sum())
                a[3] += float((~v).sum())
    holes = next(iter(sums.values()))
    print(f"{args.checkpoint}: {len(test)} test frames, holes {holes[3] / (holes[2] + holes[3]):.1%} of the pixels\n")
    print("| image | RGB MAE, all pixels | warped pixels | holes | holes' share of the error |")
    print("|---|---:|---:|---:|---:|")
    for name, (ev, eh, nv, nh) in sums.items():
        print(f"| {name} | {(ev + eh) / (nv + nh):.2f} | {ev / nv:.2f} | {eh / nh:.2f} | {eh / (ev + eh):.0%} |")


if __name__ == "__main__":
    main()

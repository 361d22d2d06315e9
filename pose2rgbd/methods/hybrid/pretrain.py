"""Pretrain the hybrid's fill network on many places: the weights a new place starts from (``model.fill_init``).

    python -m pose2rgbd.methods.hybrid.pretrain --datasets D1 D2 ... --out fill.pt --preset hybrid \\
        --size 128 --minutes-per-place 2.5 --rounds 2 --work W

The fill is trained without a pose decoder (``model.decoder`` false), so nothing in it belongs to one place: it
learns what the warped keyframes of any place need (holes, disocclusions, sensor depth with holes and noise,
exposure differences between keyframes). The places take turns: each round trains the current fill on every
dataset for ``minutes_per_place`` (a normal training run, route split, the fill carried from one run to the next
through a fill file; the last round at a third of the learning rate), so no place is forgotten at the end. The
result is a fill file (:mod:`pose2rgbd.methods.hybrid.pretrained`) whose ``meta`` says how it was made; the
package ships one per fill shape of its presets, made from the simulator's places with sensor realism
(docs/results.md, "A pretrained fill").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.hybrid.config import DEFAULT_PRESET, PRESETS, HybridConfig
from pose2rgbd.methods.hybrid.net import HybridNet
from pose2rgbd.methods.hybrid.network import FILL_INPUTS, FillUNet
from pose2rgbd.methods.hybrid.pretrained import read_fill_file, write_fill_file

log = logging.getLogger(__name__)


def pretrain_fill(
    datasets: Sequence[str | Path],
    out: str | Path,
    *,
    preset: str = "hybrid",
    size: int = 128,
    minutes_per_place: float = 2.5,
    rounds: int = 2,
    lr: float = 1e-3,
    batch_size: int = 8,
    work: str | Path,
    overrides: dict[str, object] | None = None,
    progress: bool = False,
) -> Path:
    """Train one fill network on ``datasets`` in turns (see the module docstring) and write it to ``out``; the
    runs and the fill between them go under ``work`` (a round already finished there is not run again)."""
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training import TrainConfig, train_model

    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is not one of {sorted(PRESETS)}")
    if not datasets:
        raise ConfigError("pretraining needs at least one dataset")
    if rounds < 1 or not minutes_per_place > 0:
        raise ConfigError("--rounds must be >= 1 and --minutes-per-place > 0")
    w = Path(work).expanduser()
    w.mkdir(parents=True, exist_ok=True)
    base = {**PRESETS[preset], **(overrides or {}), "size": int(size), "decoder": False, "decoder_loss_weight": 0.0}
    shape = HybridConfig(**base)
    current = "none"
    steps = 0
    t0 = time.monotonic()
    for r in range(rounds):
        for i, ds in enumerate(datasets):
            done = w / f"fill-r{r}-p{i}.pt"
            if done.is_file():  # resumable: this turn ran before
                done_steps = read_fill_file(done).meta.get("steps", steps)
                current, steps = str(done), done_steps if isinstance(done_steps, int) else steps
                continue
            mc = HybridConfig(**{**base, "fill_init": current})
            tc = TrainConfig(
                lr=lr if r < rounds - 1 or rounds == 1 else lr / 3, max_minutes=float(minutes_per_place), epochs=0,
                split="route", batch_size=batch_size, device="cpu", seed=1000 * r + i, progress=progress,
                tensorboard=False, val_every=0, val_every_seconds=max(30.0, 60.0 * minutes_per_place / 2),
                checkpoint_every_seconds=0.0, recalibrate_bn=False,
            )  # fmt: skip
            res = train_model(ds, w / f"place{i}", mc, tc, cache_root=w / "cache", overwrite=True)
            steps += res.steps
            trained = load_checkpoint(res.last).model
            assert isinstance(trained, HybridNet)
            fill = trained.fill
            meta = {"round": r, "place": i, "steps": steps, "val": res.final_val}
            current = str(
                write_fill_file(done, fill, shape.fill_channels, shape.fill_levels, meta, shape.fill_space_to_depth)
            )
            log.info("round %d, place %d (%s): %d steps, validation %s", r, i, ds, res.steps, res.final_val)
    final = read_fill_file(current)
    meta = {
        "places": len(datasets), "datasets": [str(d) for d in datasets], "preset": preset, "size": int(size),
        "rounds": rounds, "minutes_per_place": minutes_per_place, "lr": lr, "batch_size": batch_size,
        "steps": steps, "overrides": dict(overrides or {}), "decoder": False,
        "rgb_correction": shape.rgb_correction,  # where its colour correction was trained (the shipped: holes)
        "wall_minutes_this_call": round((time.monotonic() - t0) / 60.0, 1),
    }  # fmt: skip

    net = FillUNet(FILL_INPUTS, shape.fill_channels, shape.fill_levels, shape.fill_space_to_depth)
    net.load_state_dict(final.state_dict)
    return write_fill_file(out, net, shape.fill_channels, shape.fill_levels, meta, shape.fill_space_to_depth)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", type=Path, required=True, help="pose2rgbd datasets with metric depth")
    ap.add_argument("--out", type=Path, required=True, help="the fill file to write")
    ap.add_argument("--work", type=Path, required=True, help="runs and intermediate fills (resumable)")
    shapes = f"the fill shape of this preset ({', '.join(PRESETS)}; default {DEFAULT_PRESET})"
    ap.add_argument("--preset", default=DEFAULT_PRESET, help=shapes)
    ap.add_argument("--size", type=int, default=128, help="training resolution (the fill is fully convolutional)")
    ap.add_argument("--minutes-per-place", type=float, default=2.5, help="training time per dataset per round")
    ap.add_argument("--rounds", type=int, default=2, help="turns over all datasets (the last at lr / 3)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--progress", action="store_true", help="progress bars of each run")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        out = pretrain_fill(
            a.datasets, a.out, preset=a.preset, size=a.size, minutes_per_place=a.minutes_per_place, rounds=a.rounds,
            lr=a.lr, batch_size=a.batch_size, work=a.work, progress=a.progress,
        )  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

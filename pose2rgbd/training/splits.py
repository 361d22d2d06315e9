"""Train / validation splits.

* ``random``: the paper's split -- frames shuffled with a seed, the first 80 % train, the rest validation.
* ``route``: generalization to unseen trajectories. With several sources (the simulator writes one route per
  source; source 0 is the survey the model learns from) the frames of source 0 (or of the smallest source id)
  train and every other source is held out. With a single source (a real recording) the time-ordered frames
  are cut into ``blocks`` contiguous blocks and a seeded ``val_fraction`` of the blocks is held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose2rgbd.errors import ConfigError


@dataclass(frozen=True)
class Split:
    kind: str
    train: np.ndarray  # (N_train,) int64 frame indices, sorted
    val: np.ndarray  # (N_val,) int64, sorted
    description: str

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "description": self.description,
            "train": self.train.tolist(),
            "val": self.val.tolist(),
        }


def make_split(
    source_id: np.ndarray,
    stamp_ns: np.ndarray,
    kind: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    blocks: int = 10,
) -> Split:
    sid = np.asarray(source_id, dtype=np.int64)
    n = len(sid)
    if n < 2:
        raise ConfigError(f"cannot split {n} frame(s) into train and validation")
    if kind == "random":
        perm = np.random.default_rng(seed).permutation(n)
        n_val = max(1, round(n * val_fraction))
        return Split(
            "random",
            np.sort(perm[n_val:]),
            np.sort(perm[:n_val]),
            f"random {1 - val_fraction:.0%}/{val_fraction:.0%} of {n} frames (seed {seed})",
        )
    if kind != "route":
        raise ConfigError(f"unknown split {kind!r}; use 'random' or 'route'")
    ids = np.unique(sid)
    if len(ids) > 1:
        train_id = 0 if 0 in ids else int(ids[0])
        train = np.flatnonzero(sid == train_id)
        val = np.flatnonzero(sid != train_id)
        others = ", ".join(str(int(i)) for i in ids if i != train_id)
        return Split("route", train, val, f"route: train on source {train_id}, hold out source(s) {others}")
    order = np.argsort(np.asarray(stamp_ns), kind="stable")
    nb = int(min(blocks, n))
    chunks = np.array_split(order, nb)
    n_val_blocks = max(1, round(nb * val_fraction))
    held = np.sort(np.random.default_rng(seed).choice(nb, size=n_val_blocks, replace=False))
    val = np.sort(np.concatenate([chunks[b] for b in held]))
    train = np.setdiff1d(np.arange(n), val)
    return Split(
        "route",
        train,
        val,
        f"route (one source): {n_val_blocks} of {nb} contiguous time blocks held out "
        f"(blocks {held.tolist()}, seed {seed})",
    )

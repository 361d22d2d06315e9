"""Train / validation / test splits.

Three disjoint sets: ``train`` (the model learns from it), ``val`` (picks ``best.pt`` and drives early
stopping) and ``test`` (what ``pose2rgbd evaluate`` reports). With ``test_fraction`` 0 there is no separate
test set: ``test`` is the validation set (the paper's 80/20 protocol; ``best.pt`` is then selected on the
frames the evaluation reports, which flatters it).

* ``random``: the paper's split -- frames shuffled with a seed; the first ``test_fraction`` of them test, the next
  ``val_fraction`` validation, the rest train (defaults 10 % / 10 % / 80 %: the same training frames as the
  paper's 80/20 split with the same seed).
* ``route``: generalization to unseen trajectories. With several sources (the simulator writes one route per
  source; source 0 is the survey the model learns from) the frames of source 0 (or of the smallest source id)
  train and the other sources are held out: with two or more held-out sources, whole sources validate and the
  others test; with one, its earlier part (in time) validates and its later part tests. With a single source
  (a real recording) the time-ordered frames are cut into ``blocks`` contiguous blocks and a seeded
  ``val_fraction + test_fraction`` of the blocks is held out, part validation blocks, part test blocks.
* ``blocks``: held-out time blocks of every source: each source's frames in time order (a dataset merged from
  several flights: ``dataset merge``) are cut into ``blocks`` contiguous blocks and a seeded ``val_fraction +
  test_fraction`` of each source's blocks is held out, as ``route`` does for one source -- so the model learns the
  place from every flight, and is validated and tested on stretches of each it never saw (a source too short to
  hold a block out and keep one trains whole). With one source it is ``route``.
* ``every-nth``: hold-out frames spread evenly through time: in time order (per source), every N-th frame
  (``every_nth``) is a test frame and the frame halfway between two test frames validates; the rest train.
  Good for a single short recording where a few held-out views along the whole path are wanted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.config import SPLIT_KINDS as SPLIT_KINDS  # re-exported: where the splits are
from pose2rgbd.config import ordinal
from pose2rgbd.errors import ConfigError


@dataclass(frozen=True)
class Split:
    kind: str
    train: np.ndarray  # (N_train,) int64 frame indices, sorted
    val: np.ndarray  # (N_val,) int64, sorted
    description: str
    # (N_test,) int64, sorted; equal to ``val`` when there is no separate test set (``separate_test`` False)
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if self.test.size == 0 and self.val.size:
            object.__setattr__(self, "test", self.val)  # a two-way split: the validation frames are the test

    @property
    def separate_test(self) -> bool:
        """True when the test frames are not the validation frames."""
        return not np.array_equal(self.test, self.val)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "description": self.description,
            "train": self.train.tolist(),
            "val": self.val.tolist(),
            "test": self.test.tolist(),
            "separate_test": self.separate_test,
        }


def _arr(idx: Any) -> np.ndarray:
    return np.sort(np.asarray(idx, dtype=np.int64).reshape(-1))


def _portion(n: int, share: float) -> int:
    """How many of ``n`` held-out items go to the test set: at least one each way when both are possible."""
    if n < 2:
        return n
    return int(min(n - 1, max(1, round(n * share))))


def make_split(
    source_id: np.ndarray,
    stamp_ns: np.ndarray,
    kind: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    blocks: int = 10,
    test_fraction: float = 0.0,
    every_nth: int = 10,
) -> Split:
    """The split ``kind`` of frames with these source ids and stamps (see the module docstring).

    ``test_fraction`` 0 (the default here, for callers written before the three-way split): two-way, the test
    frames are the validation frames. :class:`~pose2rgbd.training.config.TrainConfig` defaults to 0.1.
    """
    sid = np.asarray(source_id, dtype=np.int64)
    stamps = np.asarray(stamp_ns)
    n = len(sid)
    three = test_fraction > 0
    if n < (3 if three else 2):
        raise ConfigError(f"cannot split {n} frame(s) into train, validation{' and test' if three else ''}")
    if not 0.0 <= test_fraction < 1.0 or not 0.0 < val_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in (0, 1) and [0, 1) and leave "
            "frames to train on (sum < 1)"
        )
    if kind == "random":
        perm = np.random.default_rng(seed).permutation(n)
        n_held = max(2 if three else 1, round(n * (val_fraction + test_fraction)))
        n_held = min(n_held, n - 1)
        n_test = _portion(n_held, test_fraction / (val_fraction + test_fraction)) if three else 0
        held = perm[:n_held]
        test, val = held[:n_test], held[n_test:]
        what = (
            f"random {1 - val_fraction - test_fraction:.0%}/{val_fraction:.0%}/{test_fraction:.0%} train/val/test"
            if three
            else f"random {1 - val_fraction:.0%}/{val_fraction:.0%} (no separate test set: test = validation)"
        )
        return Split("random", _arr(perm[n_held:]), _arr(val), f"{what} of {n} frames (seed {seed})", _arr(test))
    if kind == "every-nth":
        k = int(every_nth)
        if k < (3 if three else 2):
            raise ConfigError(
                f"every_nth must be >= {3 if three else 2} (got {every_nth}): every N-th frame is a test frame"
                + (" and the one halfway between validates" if three else "")
            )
        order = np.lexsort((stamps, sid))  # time order within each source
        pos = np.empty(n, np.int64)
        for s in np.unique(sid):  # the count restarts in every source
            m = order[sid[order] == s]
            pos[m] = np.arange(m.size)
        test_m = pos % k == k - 1
        val_m = pos % k == (k - 1) // 2 if three else test_m
        if not test_m.any():
            raise ConfigError(f"every_nth {k}: no source has {k} frames; use a smaller every_nth")
        what = (
            f"every-nth: every {ordinal(k)} frame in time order tests, the frame halfway between validates"
            if three
            else f"every-nth: every {ordinal(k)} frame in time order is held out (no separate test set: test = "
            "validation)"
        )
        return Split("every-nth", np.flatnonzero(~(test_m | val_m)), np.flatnonzero(val_m), what,
                     np.flatnonzero(test_m))  # fmt: skip
    if kind not in ("route", "blocks"):
        raise ConfigError(f"unknown split {kind!r}; use one of {', '.join(SPLIT_KINDS)}")
    ids = np.unique(sid)
    if kind == "route" and len(ids) > 1:
        train_id = 0 if 0 in ids else int(ids[0])
        train = np.flatnonzero(sid == train_id)
        held_ids = [int(i) for i in ids if i != train_id]
        held = np.flatnonzero(sid != train_id)
        if not three:
            others = ", ".join(map(str, held_ids))
            return Split("route", train, held, f"route: train on source {train_id}, hold out source(s) {others} "
                         "(no separate test set: test = validation)")  # fmt: skip
        if len(held_ids) >= 2:
            n_test_src = _portion(len(held_ids), test_fraction / (val_fraction + test_fraction))
            test_ids, val_ids = held_ids[len(held_ids) - n_test_src :], held_ids[: len(held_ids) - n_test_src]
            return Split(
                "route", train, np.flatnonzero(np.isin(sid, val_ids)),
                f"route: train on source {train_id}, validate on source(s) {', '.join(map(str, val_ids))}, test on "
                f"source(s) {', '.join(map(str, test_ids))}",
                np.flatnonzero(np.isin(sid, test_ids)),
            )  # fmt: skip
        t_order = held[np.argsort(stamps[held], kind="stable")]
        n_val = len(t_order) - _portion(len(t_order), test_fraction / (val_fraction + test_fraction))
        return Split(
            "route", train, _arr(t_order[:n_val]),
            f"route: train on source {train_id}; held-out source {held_ids[0]}: its first {n_val} frames (in time) "
            f"validate, the last {len(t_order) - n_val} test",
            _arr(t_order[n_val:]),
        )  # fmt: skip
    # each source's frames in time order, cut into blocks and held out by the same rule (one source: route's)
    rng = np.random.default_rng(seed)
    val_parts, test_parts, said = [], [], []
    for s_id in ids:
        rows = np.flatnonzero(sid == s_id)
        order = rows[np.argsort(stamps[rows], kind="stable")]
        got = _held_blocks(order, blocks, rng, three, val_fraction, test_fraction)
        if got is None:  # too few frames to hold a block out and still train on one: all of it trains
            said.append(f"source {int(s_id)}: {len(order)} frame(s), all training")
            continue
        v, t, text = got
        val_parts.append(v)
        test_parts.append(t)
        said.append(text if len(ids) == 1 else f"source {int(s_id)}: {text}")
    if not val_parts:
        raise ConfigError(f"cannot split {n} frame(s) into blocks: no source has enough frames to hold one out")
    val, test = _arr(np.concatenate(val_parts)), _arr(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(n), np.concatenate([val, test]))
    where = "route (one source)" if kind == "route" else f"blocks ({len(ids)} source{'s' if len(ids) > 1 else ''})"
    return Split(kind, train, val, f"{where}: {'; '.join(said)} (seed {seed})", test)


def _held_blocks(
    order: np.ndarray, blocks: int, rng: np.random.Generator, three: bool, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """One recording's frames ``order`` (time order) cut into ``blocks`` contiguous blocks, a ``val_fraction +
    test_fraction`` share of them held out (``rng``), validation and test blocks alternating: ``(val, test, what)``
    frame indices and a description; None where too few frames leave a block to train on."""
    n = len(order)
    nb = int(min(blocks, n))
    if nb < (3 if three else 2):
        return None
    chunks = np.array_split(order, nb)
    n_held = max(2 if three else 1, round(nb * (val_fraction + test_fraction)))
    n_held = min(n_held, nb - 1)
    held_b = np.sort(rng.choice(nb, size=n_held, replace=False))
    if three:
        # alternate validation and test blocks along the recording, so neither is only its start or its end
        n_test_b = _portion(n_held, test_fraction / (val_fraction + test_fraction))
        test_b = held_b[1::2][:n_test_b]
        if len(test_b) < n_test_b:
            rest = [b for b in held_b if b not in test_b]
            test_b = np.sort(np.concatenate([test_b, rest[len(rest) - (n_test_b - len(test_b)) :]]))
        val_b = np.array([b for b in held_b if b not in test_b], np.int64)
    else:
        test_b = val_b = held_b
    val = np.concatenate([chunks[b] for b in val_b])
    test = np.concatenate([chunks[b] for b in test_b])
    what = (
        f"validation blocks {val_b.tolist()}, test blocks {test_b.tolist()}"
        if three
        else f"blocks {held_b.tolist()} (no separate test set: test = validation)"
    )
    return val, test, f"{n_held} of {nb} contiguous time blocks held out, {what}"


def split_from_config(source_id: np.ndarray, stamp_ns: np.ndarray, train_config: Any) -> Split:
    """The split a training run with ``train_config`` (a :class:`~pose2rgbd.training.config.TrainConfig`, or
    the ``train_config`` dict saved in a checkpoint) uses. A checkpoint written before the three-way split has
    no ``test_fraction``: its split is rebuilt as it was trained (two-way, 20 % validation = test)."""

    def get(key: str, default: Any) -> Any:
        return (
            train_config.get(key, default) if isinstance(train_config, Mapping) else getattr(train_config, key, default)
        )

    return make_split(
        source_id,
        stamp_ns,
        str(get("split", "random")),
        seed=int(get("seed", 0)),
        val_fraction=float(get("val_fraction", 0.2)),
        test_fraction=float(get("test_fraction", 0.0)),
        every_nth=int(get("every_nth", 10)),
    )

"""Which frames of a dataset become a place map's keyframes: :class:`MapSelection` (a split's training frames,
some sources, every N-th, a piece of a large place) and :func:`select_frames`; the selection is stored in the map's
manifest (:meth:`MapSelection.from_manifest` reads it back, e.g. for ``localize calibrate --map``, which calibrates on
the validation frames of the map's own split: :func:`selection_split`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pose2rgbd.config import help_field, ordinal, ranged_field
from pose2rgbd.dataset import Dataset
from pose2rgbd.dataset.splits import SPLIT_KINDS, Split, make_split
from pose2rgbd.errors import ConfigError

SELECTION_SPLITS = ("", *SPLIT_KINDS)


@dataclass
class MapSelection:
    """Which dataset frames become keyframes."""

    split: str = help_field(
        "", "take the training frames of this split (random | route | blocks | every-nth, as `pose2rgbd train` makes "
        "it); empty: no split"
    )  # fmt: skip
    seed: int = help_field(0, "seed of the random split")
    val_fraction: float = help_field(0.1, "validation share of the split (as train.val_fraction)")
    test_fraction: float = help_field(0.1, "test share of the split (as train.test_fraction)")
    every_nth: int = help_field(10, "the every-nth split's N (as train.every_nth)")
    sources: list[int] = help_field([], "only frames of these source ids (empty: every source)")
    stride: int = ranged_field(1, "then keep every N-th of the selected frames (1: all): a sparse map", 1, 100000)
    piece: str = help_field(
        "", "K/N: then only the K-th of N consecutive parts of them -- a large place built in pieces (on several "
        "machines), joined by `pose2rgbd map merge`; empty: all"
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.split not in SELECTION_SPLITS:
            raise ConfigError(f"selection.split {self.split!r}: use {', '.join(SPLIT_KINDS)} or leave it empty")
        self.piece_of()

    def piece_of(self) -> tuple[int, int] | None:
        """``(K, N)`` of ``piece`` (1-based K), or None for the whole selection."""
        if not self.piece:
            return None
        k, _, n = self.piece.partition("/")
        try:
            kn = int(k), int(n)
        except ValueError:
            kn = (0, 0)
        if not 1 <= kn[0] <= kn[1]:
            raise ConfigError(f"selection.piece {self.piece!r}: write K/N with 1 <= K <= N, e.g. 2/4")
        return kn

    def describe(self) -> str:
        parts = []
        if self.split:
            parts.append(f"training frames of the {self.split} split (seed {self.seed})")
        if self.sources:
            parts.append(f"sources {','.join(map(str, self.sources))}")
        if self.stride > 1:
            parts.append(f"every {ordinal(self.stride)}")
        if self.piece:
            parts.append(f"piece {self.piece}")
        return ", ".join(parts) or "every frame"

    @classmethod
    def from_manifest(cls, entry: Mapping[str, object]) -> MapSelection:
        """The selection a map was built with: its manifest's ``selection`` (which adds ``description`` and, for a
        merged map, ``keyframes``, and holds only what the merged maps' selections have in common; the rest takes
        the defaults)."""
        from pose2rgbd import config as cfgmod

        names = {f.name for f in dataclasses.fields(cls)}
        return cfgmod.from_dict(cls, {k: v for k, v in entry.items() if k in names}, where="map.json selection")


def selection_split(ds: Dataset, sel: MapSelection) -> Split:
    """The split ``sel.split`` of ``ds`` with the selection's seed and fractions, as ``pose2rgbd train`` makes it:
    the keyframes are its training frames; ``localize calibrate --map`` calibrates on its validation frames."""
    if not sel.split:
        raise ConfigError("the map's selection names no split (selection.split is empty)")
    f = ds.frames
    return make_split(f.source_id, f.stamp_ns, sel.split, seed=sel.seed, val_fraction=sel.val_fraction,
                      test_fraction=sel.test_fraction, every_nth=sel.every_nth)  # fmt: skip


def select_frames(ds: Dataset, sel: MapSelection) -> np.ndarray:
    """Sorted dataset rows of the keyframes (see :class:`MapSelection`)."""
    f = ds.frames
    rows = np.arange(len(ds))
    if sel.split:
        rows = selection_split(ds, sel).train
    if sel.sources:
        unknown = sorted(set(sel.sources) - set(np.unique(f.source_id).tolist()))
        if unknown:
            raise ConfigError(f"selection.sources: {unknown} are not source ids of {ds.path}")
        rows = rows[np.isin(f.source_id[rows], sel.sources)]
    if sel.stride > 1:  # every N-th in time order within each source
        keep = []
        for s in np.unique(f.source_id[rows]):
            r = rows[f.source_id[rows] == s]
            r = r[np.argsort(f.stamp_ns[r], kind="stable")]
            keep.append(r[:: sel.stride])
        rows = np.concatenate(keep)
    rows = np.sort(rows)
    kn = sel.piece_of()
    if kn is not None:  # consecutive rows: neighbours in time stay together (triangulation pairs them)
        rows = np.array_split(rows, kn[1])[kn[0] - 1]
    if len(rows) < 2:
        raise ConfigError(f"the selection ({sel.describe()}) leaves {len(rows)} keyframe(s); a map needs at least 2")
    return rows

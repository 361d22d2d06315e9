"""Train / validation splits."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.training.splits import make_split


def test_random_split_is_seeded_80_20_and_disjoint() -> None:
    sid = np.zeros(100, np.int64)
    stamps = np.arange(100)
    a = make_split(sid, stamps, "random", seed=3)
    b = make_split(sid, stamps, "random", seed=3)
    c = make_split(sid, stamps, "random", seed=4)
    assert len(a.train) == 80 and len(a.val) == 20
    assert np.array_equal(a.val, b.val) and not np.array_equal(a.val, c.val)
    assert set(a.train).isdisjoint(a.val) and set(a.train) | set(a.val) == set(range(100))


def test_route_split_holds_out_other_sources() -> None:
    sid = np.array([1, 0, 0, 2, 0, 1])
    s = make_split(sid, np.arange(6), "route")
    assert s.train.tolist() == [1, 2, 4] and s.val.tolist() == [0, 3, 5]
    s = make_split(np.array([3, 3, 5]), np.arange(3), "route")  # no source 0: smallest id trains
    assert s.train.tolist() == [0, 1] and s.val.tolist() == [2]


def test_route_split_single_source_uses_contiguous_blocks() -> None:
    n = 100
    stamps = np.arange(n)[::-1].copy()  # time order reversed w.r.t. index
    s = make_split(np.zeros(n, np.int64), stamps, "route", seed=1, val_fraction=0.2, blocks=10)
    assert len(s.val) == 20 and set(s.train).isdisjoint(s.val)
    # held-out frames form 2 runs of 10 consecutive time stamps
    t = np.sort(stamps[s.val])
    runs = np.split(t, np.flatnonzero(np.diff(t) != 1) + 1)
    assert all(len(r) % 10 == 0 for r in runs)


def test_bad_split() -> None:
    with pytest.raises(ConfigError):
        make_split(np.zeros(5), np.arange(5), "sideways")
    with pytest.raises(ConfigError):
        make_split(np.zeros(1), np.arange(1), "random")

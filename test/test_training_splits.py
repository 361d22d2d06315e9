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


def test_blocks_split_trains_on_every_source_and_holds_out_time_blocks_of_each() -> None:
    """Flights merged into one dataset (sources, each its own clock): `route` trains on source 0 alone; `blocks` cuts
    every source, in time order, into contiguous blocks and holds out a share of each, so every flight trains,
    validates and tests on stretches of itself -- five equal flights, or a long and a short one. With one source it
    is `route`, frame for frame."""
    for sizes in ((50, 50), (20, 20, 20, 20, 20), (950, 50)):
        sid = np.concatenate([np.full(k, s, np.int64) for s, k in enumerate(sizes)])[::-1].copy()  # rows not in order
        stamps = np.concatenate([np.arange(k) + 10**6 * s for s, k in enumerate(sizes)])[::-1].copy()
        for seed in range(5):
            s = make_split(sid, stamps, "blocks", seed=seed, val_fraction=0.1, test_fraction=0.1, blocks=10)
            assert s.kind == "blocks" and s.description.startswith(f"blocks ({len(sizes)} sources): source 0: ")
            for src in range(len(sizes)):
                parts = [sid[p] == src for p in (s.train, s.val, s.test)]
                assert all(m.any() for m in parts), (sizes, seed, src)  # each flight trains, validates and tests
            for held in (s.val, s.test):
                for src in np.unique(sid[held]):  # each held-out block: consecutive stamps of one source
                    t = np.sort(stamps[held][sid[held] == src])
                    assert len(np.split(t, np.flatnonzero(np.diff(t) != 1) + 1)) <= 2
    route = make_split(sid, stamps, "route", seed=4, val_fraction=0.2, test_fraction=0.2, blocks=10)
    assert set(sid[route.train].tolist()) == {0}
    one = np.zeros(60, np.int64)
    b = make_split(one, np.arange(60), "blocks", seed=3, test_fraction=0.1)
    r = make_split(one, np.arange(60), "route", seed=3, test_fraction=0.1)
    assert (b.train.tolist(), b.val.tolist(), b.test.tolist()) == (r.train.tolist(), r.val.tolist(), r.test.tolist())
    tiny = make_split(np.array([0] * 30 + [1, 1]), np.arange(32), "blocks", test_fraction=0.1)  # 2 frames: train
    assert {30, 31} <= set(tiny.train.tolist()) and "source 1: 2 frame(s), all training" in tiny.description


def test_bad_split() -> None:
    with pytest.raises(ConfigError):
        make_split(np.zeros(5), np.arange(5), "sideways")
    with pytest.raises(ConfigError):
        make_split(np.zeros(1), np.arange(1), "random")


# Three-way splits: validation (picks best.pt) never equals test (what evaluate reports), for every kind.


def _three_way(s, n: int) -> None:
    tr, va, te = set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())
    assert s.separate_test and va and te and tr
    assert tr.isdisjoint(va) and tr.isdisjoint(te) and va.isdisjoint(te)
    assert tr | va | te == set(range(n))


@pytest.mark.parametrize(
    "sid",
    [np.zeros(60, np.int64), np.repeat([0, 1], 30), np.repeat([0, 1, 2, 3], 15), np.repeat([2, 5, 7], 20)],
    ids=["one-source", "two-sources", "four-sources", "no-source-0"],
)
@pytest.mark.parametrize("kind", ["random", "route", "blocks", "every-nth"])
def test_validation_never_equals_test(kind: str, sid: np.ndarray) -> None:
    n = len(sid)
    stamps = np.tile(np.arange(n // len(np.unique(sid))), len(np.unique(sid))) * 10
    s = make_split(sid, stamps, kind, seed=2, val_fraction=0.1, test_fraction=0.1, every_nth=5)
    _three_way(s, n)
    assert s.to_dict()["test"] == s.test.tolist() and s.to_dict()["separate_test"] is True


def test_random_three_way_keeps_the_papers_training_frames() -> None:
    sid, st = np.zeros(100, np.int64), np.arange(100)
    old = make_split(sid, st, "random", seed=3, val_fraction=0.2)
    new = make_split(sid, st, "random", seed=3, val_fraction=0.1, test_fraction=0.1)
    assert np.array_equal(old.train, new.train) and len(new.val) == len(new.test) == 10
    assert not old.separate_test and np.array_equal(old.test, old.val)  # two-way: test = validation


def test_route_split_multi_source_holds_whole_routes() -> None:
    sid = np.repeat([0, 1, 2], 10)
    s = make_split(sid, np.arange(30), "route", val_fraction=0.1, test_fraction=0.1)
    assert set(sid[s.val]) == {1} and set(sid[s.test]) == {2} and set(sid[s.train]) == {0}
    # one held-out route: its earlier frames validate, its later frames test
    sid = np.repeat([0, 1], 10)
    st = np.r_[np.arange(10), np.arange(10)[::-1]]
    s = make_split(sid, st, "route", val_fraction=0.1, test_fraction=0.1)
    assert st[s.val].max() < st[s.test].min()


def test_every_nth_split() -> None:
    n = 40
    stamps = np.arange(n)[::-1].copy()  # time order reversed w.r.t. index
    s = make_split(np.zeros(n, np.int64), stamps, "every-nth", every_nth=4, test_fraction=0.1)
    pos = np.argsort(np.argsort(stamps))  # position in time order
    assert sorted(pos[s.test] % 4) == [3] * 10 and sorted(pos[s.val] % 4) == [1] * 10 and len(s.train) == 20
    two = make_split(np.zeros(n, np.int64), stamps, "every-nth", every_nth=5)
    assert np.array_equal(two.val, two.test) and len(two.test) == 8 and len(two.train) == 32
    with pytest.raises(ConfigError, match="every_nth must be >= 3"):
        make_split(np.zeros(n, np.int64), stamps, "every-nth", every_nth=2, test_fraction=0.1)


def test_train_config_defaults_are_three_way_and_the_split_is_saved() -> None:
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.splits import split_from_config

    tc = TrainConfig(split="every-nth", every_nth=6)
    assert tc.test_fraction > 0
    s = split_from_config(np.zeros(30, np.int64), np.arange(30), tc)
    _three_way(s, 30)
    # a checkpoint's train_config from before the three-way split: rebuilt two-way, as it was trained
    old = split_from_config(np.zeros(30, np.int64), np.arange(30), {"split": "random", "seed": 0, "val_fraction": 0.2})
    assert not old.separate_test and len(old.val) == 6
    with pytest.raises(ConfigError, match="every_nth"):
        TrainConfig(split="every-nth", every_nth=2)
    with pytest.raises(ConfigError, match="test_fraction"):
        TrainConfig(val_fraction=0.5, test_fraction=0.5)

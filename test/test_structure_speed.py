"""The structure localizer's per-image work: the batched ratio test gives the per-keyframe loop's matches, and a
sequence's previous fix narrows the candidates (the most similar keyframes near it) until it fails."""

from __future__ import annotations

import warnings

import numpy as np

from pose2rgbd.placemap.features import match_ratio, match_ratio_blocks, root_sift, stack_blocks


def _per_keyframe(query: np.ndarray, blocks: list[np.ndarray], ratio: float) -> dict[int, tuple[int, int]]:
    """The reference: match_ratio per block, each query feature keeping its lowest distance ratio (first block on
    ties)."""
    best: dict[int, tuple[float, int, int]] = {}
    for b, ref in enumerate(blocks):
        q, k, sc = match_ratio(query, ref, ratio, with_score=True)
        for qi, ki, s in zip(q.tolist(), k.tolist(), sc.tolist(), strict=True):
            if qi not in best or s < best[qi][0]:
                best[qi] = (s, b, ki)
    return {q: (b, k) for q, (_, b, k) in best.items()}


def test_batched_ratio_test_matches_the_per_keyframe_loop() -> None:
    """Blocks of different sizes (one of a single feature: never a match), queries that are noisy copies of
    features of several blocks: one matrix product gives exactly the per-keyframe ratio test's matches."""
    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 256, (n, 128)) for n in (40, 25, 1, 60, 2)]
    raw[1][:5] = raw[0][:5]  # the same world point in two keyframes: a ratio test over their union would reject it
    blocks = [root_sift(r.astype(np.uint8)) for r in raw]
    src = np.concatenate([raw[0][:15], raw[3][10:30], raw[4][:1], raw[1][:5]])
    noisy = np.clip(src + rng.normal(0, 20, src.shape), 0, 255).astype(np.uint8)
    query = np.concatenate([root_sift(noisy), root_sift(rng.integers(0, 256, (20, 128)).astype(np.uint8))])
    stacked, sizes = stack_blocks(blocks)
    for ratio in (0.8, 0.95):
        m = match_ratio_blocks(query, stacked, sizes, ratio)
        want = _per_keyframe(query, blocks, ratio)
        assert len(m.query) >= 30 and 2 not in m.block.tolist() and set(m.query.tolist()) >= set(range(5))
        got = {q: (b, k) for q, b, k in zip(m.query.tolist(), m.block.tolist(), m.ref.tolist(), strict=True)}
        assert got == want
    assert len(match_ratio_blocks(query[:0], stacked, sizes, 0.8).query) == 0
    # candidate keyframes none of whose features has a world point (a triangulated map): no match, no error
    none, no_sizes = stack_blocks([np.zeros((0, 128), np.float32)] * 3)
    assert len(match_ratio_blocks(query, none, no_sizes, 0.8).query) == 0
    # a candidate keyframe with no feature beside others: its empty block (inf / inf) matches nothing, without a
    # RuntimeWarning
    stacked, sizes = stack_blocks([blocks[0], np.zeros((0, 128), np.float32), blocks[3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = match_ratio_blocks(query, stacked, sizes, 0.8)
    assert len(m.query) >= 20 and 1 not in m.block.tolist()


def test_a_sequence_matches_the_most_similar_keyframes_near_the_previous_fix(map_world: dict) -> None:
    """With a decisive previous fix the next image is matched against the ``prior_candidates`` keyframes most similar
    to it among those nearest to the previous fix (not every place place recognition proposes); when the sequence
    jumps elsewhere the stale prior gives no decisive fix and place recognition finds the new place."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    pm = PlaceMap(map_world["map"])
    sims: list[np.ndarray] = []
    describe = pm.describer.describe

    def counted(img: np.ndarray, desc: np.ndarray) -> np.ndarray:
        v = describe(img, desc)
        sims.append(pm.global_desc @ v)
        return v

    pm.describer.describe = counted  # type: ignore[method-assign,assignment]
    ds = Dataset(map_world["dataset"])
    T = ds.frames.T_world_cam
    rows = np.flatnonzero(ds.frames.source_id == 1)
    cfg = StructureConfig(prior_candidates=4)
    loc = StructureLocalizer(pm, cfg)
    first = loc.localize_one(ds.read_rgb(int(rows[0])))
    assert first.ok and first.prior == "" and len(sims) == 1
    prev, differs = first, False
    for i in rows[1:4]:
        f = loc.localize_one(ds.read_rgb(int(i)))
        assert f.ok and f.prior == "sequence" and len(f.keyframes) == 4, f.reason
        assert np.linalg.norm(f.T_world_cam[:3, 3] - T[i][:3, 3]) < 1.0
        # the candidates: the most similar to this image of the 3 x candidates keyframes nearest to the previous fix
        near = pm.poses.nearest(prev.T_world_cam, cfg.prior_pool)[0]
        want = near[np.argsort(-sims[-1][near], kind="stable")][:4]
        assert sorted(np.asarray(f.keyframes).tolist()) == sorted(want.tolist())
        differs |= set(want.tolist()) != set(pm.poses.nearest(prev.T_world_cam, 4)[0].tolist())
        prev = f
    assert differs  # (the case is one where the nearest in pose are not the most similar)
    assert len(sims) == 4  # one global descriptor per image
    # a jump: the last frame of the route, far from the previous fix
    far = int(rows[-1])
    assert np.linalg.norm(T[far][:3, 3] - T[rows[3]][:3, 3]) > 100.0
    jump = loc.localize_one(ds.read_rgb(far))
    assert jump.prior == ""
    assert not jump.ok or np.linalg.norm(jump.T_world_cam[:3, 3] - T[far][:3, 3]) < 1.0

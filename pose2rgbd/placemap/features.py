"""Local features of keyframes and queries: SIFT (OpenCV, no downloaded weights), RootSIFT matching.

SIFT is rotation and scale invariant, so a query taken at another heading than the survey still matches. Keypoints
are extracted on the grey image; descriptors are stored as uint8 (OpenCV's float descriptors hold integers in
[0, 255]). Matching uses RootSIFT (L1-normalize, square root: Hellinger distance, which matches better than L2 on
SIFT) with Lowe's ratio test per keyframe: a query feature is matched to each candidate keyframe separately,
because the same world point in several keyframes would fail a ratio test over their union.

:class:`CandidateMatcher` is what a map answers a localizer's per-image question with: the 2-D/3-D correspondences
of a query's RootSIFT against a set of candidate keyframes, from the keyframes' features and world points (kept
converted in a small LRU, the candidate set stacked once while the next image asks for the same set).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from pose2rgbd.config import ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.placemap.lru import LRU


@dataclass
class FeatureConfig:
    """Local features (SIFT) of the map's keyframes and of query images."""

    max_features: int = ranged_field(1000, "at most this many SIFT features per image (strongest first)", 16, 100000)
    contrast_threshold: float = ranged_field(
        0.02, "SIFT contrast threshold (lower: more features in low-texture images)", 0.001, 1.0
    )
    max_side: int = ranged_field(
        0, "extract on images downscaled so that the longer side is at most this (0: as given)", 0, 100000
    )

    def __post_init__(self) -> None:
        if self.max_side and self.max_side < 32:
            raise ConfigError("features.max_side must be 0 or >= 32")


@dataclass
class ImageFeatures:
    """Keypoints of one image at its own pixel coordinates."""

    xy: np.ndarray  # (K, 2) float32 (x right, y down; pixel centres at integers)
    desc: np.ndarray  # (K, 128) uint8


_local = threading.local()  # one SIFT object per thread (OpenCV detectors are not thread-safe)


def _sift(cfg: FeatureConfig) -> cv2.SIFT:
    key = (cfg.max_features, cfg.contrast_threshold)
    cache = getattr(_local, "sift", None)
    if cache is None or cache[0] != key:
        sift = cv2.SIFT_create(  # type: ignore[attr-defined]
            nfeatures=cfg.max_features, contrastThreshold=cfg.contrast_threshold
        )
        _local.sift = (key, sift)
    return _local.sift[1]  # type: ignore[no-any-return]


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB or (H, W) grey -> uint8 (H, W) grey."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ConfigError(f"features: expected a uint8 image, got {a.dtype}")
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    raise ConfigError(f"features: expected (H, W, 3) RGB or (H, W) grey, got {a.shape}")


def extract(image: np.ndarray, cfg: FeatureConfig, mask: np.ndarray | None = None) -> ImageFeatures:
    """SIFT keypoints and descriptors of ``image`` (RGB or grey, uint8), in the image's pixel coordinates.
    ``mask`` (H, W) bool: where keypoints may be (e.g. where the keyframe has depth)."""
    g = to_gray(image)
    h, w = g.shape
    s = 1.0
    if cfg.max_side and max(h, w) > cfg.max_side:
        s = cfg.max_side / max(h, w)
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        if mask is not None:
            mask = cv2.resize(mask.astype(np.uint8), (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    m = None if mask is None else (np.asarray(mask, bool).astype(np.uint8) * 255)
    kps, desc = _sift(cfg).detectAndCompute(g, m)
    if desc is None or not kps:
        return ImageFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    xy = np.array([k.pt for k in kps], np.float32)
    if s != 1.0:  # back to the full image's pixel centres
        xy = (xy + 0.5) / s - 0.5
    return ImageFeatures(xy, np.clip(np.round(desc), 0, 255).astype(np.uint8))


def root_sift(desc: np.ndarray) -> np.ndarray:
    """uint8 SIFT (K, 128) -> float32 RootSIFT (L1-normalized, square-rooted: unit L2 norm)."""
    rs: np.ndarray = np.array(desc, np.float32)  # one array, divided and rooted in place (the vocabulary's
    rs /= np.maximum(rs.sum(axis=1, keepdims=True), 1e-6)  # 100,000 samples: 51 MB, not three of them)
    np.sqrt(rs, out=rs)
    return rs


def match_ratio(
    query: np.ndarray, ref: np.ndarray, ratio: float, *, with_score: bool = False
) -> tuple[np.ndarray, ...]:
    """Lowe's ratio test between RootSIFT descriptors: ``(query_idx, ref_idx)`` of the matches whose nearest
    reference is closer than ``ratio`` x the second nearest (squared distances from one matrix product, which is
    what a brute-force matcher does; OpenCV's BFMatcher is several times slower at these sizes). ``with_score``:
    also each match's distance ratio (nearest / second nearest, lower is more distinctive)."""
    if len(query) == 0 or len(ref) < 2:
        empty = np.zeros(0, np.int64)
        return (empty, empty, np.zeros(0)) if with_score else (empty, empty)
    # unit vectors: |a - b|^2 = 2 - 2 a.b; the best and second-best by two arg-max passes (several times faster
    # than a partial sort of every row)
    sim = query @ ref.T
    rows = np.arange(len(sim))
    best = np.argmax(sim, axis=1)
    s1 = sim[rows, best].copy()
    sim[rows, best] = -np.inf
    s2 = np.max(sim, axis=1)
    d1 = np.maximum(2.0 - 2.0 * s1, 0.0)
    d2 = np.maximum(2.0 - 2.0 * s2, 0.0)
    ok = d1 < (ratio * ratio) * d2
    q = np.flatnonzero(ok)
    if with_score:
        return q, best[ok], np.sqrt(d1[ok] / np.maximum(d2[ok], 1e-12))
    return q, best[ok]


@dataclass
class BlockMatches:
    """One correspondence per matched query feature against a set of reference blocks (keyframes)."""

    query: np.ndarray  # (M,) query feature rows
    block: np.ndarray  # (M,) which block (position in the list given) holds the match
    ref: np.ndarray  # (M,) row within that block
    score: np.ndarray  # (M,) distance ratio nearest / second nearest within the block (lower: more distinctive)


def stack_blocks(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """RootSIFT blocks (K_b, 128) -> one zero-padded (B * K_max, 128) matrix and the blocks' lengths (B,): the
    operand :func:`match_ratio_blocks` takes (build it once for a candidate set that several queries share)."""
    sizes = np.array([len(b) for b in blocks], np.int64)
    kmax = int(sizes.max()) if len(sizes) else 0
    dim = blocks[0].shape[1] if blocks else 128
    out = np.zeros((len(blocks), kmax, dim), np.float32)
    for b, d in enumerate(blocks):
        out[b, : len(d)] = d
    return out.reshape(-1, dim), sizes


def match_ratio_blocks(query: np.ndarray, stacked: np.ndarray, sizes: np.ndarray, ratio: float) -> BlockMatches:
    """Lowe's ratio test of RootSIFT ``query`` (N, 128) against every block of :func:`stack_blocks` separately (the
    same world point in several keyframes would fail one ratio test over their union), as ONE matrix product
    ``query @ stacked.T`` instead of a product per block (one BLAS call: the cores stay busy and the per-call
    overhead is paid once); then each query feature keeps its most distinctive passing match over the blocks (the
    same world point seen in several keyframes would otherwise enter RANSAC several times)."""
    nb = len(sizes)
    empty = np.zeros(0, np.int64)
    kmax = stacked.shape[0] // nb if nb else 0
    if len(query) == 0 or kmax == 0:  # no query feature, no keyframe, or keyframes without a point: no match
        return BlockMatches(empty, empty, empty, np.zeros(0))
    sim = (query @ stacked.T).reshape(len(query), nb, kmax)
    for b in np.flatnonzero(sizes < kmax):  # padding rows never match
        sim[:, b, sizes[b] :] = -np.inf
    best = np.argmax(sim, axis=2)  # (N, B)
    s1 = np.take_along_axis(sim, best[..., None], axis=2)[..., 0]
    np.put_along_axis(sim, best[..., None], -np.inf, axis=2)
    s2 = np.max(sim, axis=2)
    d1 = np.maximum(2.0 - 2.0 * s1, 0.0)  # unit vectors: |a - b|^2 = 2 - 2 a.b
    d2 = np.maximum(2.0 - 2.0 * s2, 0.0)  # (-inf for a block of one: d2 = inf, the test passes as match_ratio's)
    ok = (d1 < (ratio * ratio) * d2) & (sizes[None] >= 2)
    with np.errstate(invalid="ignore"):  # an empty block's inf / inf, masked by ok
        score = np.where(ok, np.sqrt(d1 / np.maximum(d2, 1e-12)), np.inf)
    blk = np.argmin(score, axis=1)
    q = np.flatnonzero(np.isfinite(score[np.arange(len(query)), blk]))
    blk = blk[q]
    return BlockMatches(q, blk, best[q, blk], score[q, blk])


# ------------------------------------------------------------------------------------ candidate keyframes
@dataclass
class KeyframeFeatures:
    """One keyframe's local features with world points (NaN: a feature without a point)."""

    xy: np.ndarray  # (K, 2) float32 pixels
    desc: np.ndarray  # (K, 128) uint8 SIFT
    xyz: np.ndarray  # (K, 3) float32 world points


class KeyframeFeatureSource(Protocol):
    """What the matcher reads of a map: a keyframe's local features with their world points (a
    :class:`~pose2rgbd.placemap.PlaceMap`, or the build's in-memory :class:`~pose2rgbd.placemap.view.MapView`)."""

    def features(self, i: int) -> KeyframeFeatures: ...


@dataclass
class Correspondences:
    """One 2-D/3-D correspondence per matched query keypoint."""

    query: np.ndarray  # (M,) query keypoint rows
    xyz: np.ndarray  # (M, 3) float64 world points
    keyframe: np.ndarray  # (M,) map rows of the keyframes that hold the points


@dataclass
class _Stacked:
    """A candidate set as the matcher's operand: RootSIFT blocks stacked (:func:`stack_blocks`) with the world
    points row for row (NaN on padding rows)."""

    desc: np.ndarray  # (B * K_max, 128) float32
    sizes: np.ndarray  # (B,)
    xyz: np.ndarray  # (B * K_max, 3) float64


class CandidateMatcher:
    """Matches query descriptors against candidate keyframes of a map (thread-safe). The keyframes' RootSIFT
    descriptors and world points are kept in a small LRU (consecutive images of a sequence ask for mostly the same
    keyframes; converting a keyframe's uint8 SIFT costs as much as matching it), keyed by the keyframe row, and the
    last candidate set stacked (:class:`~pose2rgbd.placemap.lru.LRU`, the map's own cache)."""

    def __init__(
        self, place_map: KeyframeFeatureSource, cache_keyframes: int = 128, all_features: bool = False
    ) -> None:
        self.map = place_map
        self.all_features = all_features
        self._blocks: LRU[int, tuple[np.ndarray, np.ndarray]] = LRU(cache_keyframes)
        self._stacked: LRU[tuple[int, ...], _Stacked] = LRU(1)

    def _convert(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        f = self.map.features(i)
        if self.all_features:
            return root_sift(f.desc), f.xyz.astype(np.float64)
        ok = np.all(np.isfinite(f.xyz), axis=1)
        return root_sift(f.desc[ok]), f.xyz[ok].astype(np.float64)

    def keyframe(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe ``i``'s RootSIFT (K, 128) float32 and world points (K, 3) float64: the features with a point, or
        with ``all_features`` every stored feature (NaN: no point).

        ``all_features``: every feature takes part in the ratio test, with a point or without (a triangulated map
        has a point for a fifth of them); against the features with a point only, a query feature whose true match
        has no point can pass the test with a wrong one, for want of the true rival. Cleaner correspondences, but
        fewer: on a small sequence map (320x180) some queries then have too few (docs/results.md)."""
        return self._blocks.get(int(i), lambda: self._convert(int(i)))

    def _stack(self, key: tuple[int, ...]) -> _Stacked:
        blocks = [self.keyframe(i) for i in key]
        desc, sizes = stack_blocks([b[0] for b in blocks])
        kmax = len(desc) // len(sizes) if len(sizes) else 0
        xyz = np.full((len(sizes), kmax, 3), np.nan)
        for b, (_, pts) in enumerate(blocks):
            xyz[b, : len(pts)] = pts
        return _Stacked(desc, sizes, xyz.reshape(-1, 3))

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """The two caches' ``cached`` / ``hits`` / ``misses``: ``keyframes`` (converted blocks), ``stacked`` (the
        last candidate set)."""
        return {"keyframes": self._blocks.stats(), "stacked": self._stacked.stats()}

    def match(self, q_rs: np.ndarray, cand: np.ndarray, ratio: float) -> Correspondences:
        """Ratio-test matches of RootSIFT ``q_rs`` against each keyframe of ``cand`` (map rows), one per query
        keypoint (its most distinctive match over the candidates)."""
        if len(cand) == 0:
            e = np.zeros(0, np.int64)
            return Correspondences(e, np.zeros((0, 3)), e)
        key = tuple(int(i) for i in cand)
        s = self._stacked.get(key, lambda: self._stack(key))
        m = match_ratio_blocks(q_rs, s.desc, s.sizes, ratio)
        xyz = s.xyz[m.block * (len(s.desc) // len(s.sizes)) + m.ref]  # the matched rows' points
        ok = np.all(np.isfinite(xyz), axis=1)  # matched to a feature without a point: no correspondence
        return Correspondences(m.query[ok], xyz[ok], np.asarray(cand, np.int64)[m.block[ok]])

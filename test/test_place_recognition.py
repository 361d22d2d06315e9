"""Place recognition's global descriptor (:mod:`pose2rgbd.placemap.place`): the PCA of the keyframes' VLADs and
the descriptors of a map's keyframes."""

from __future__ import annotations

import numpy as np

from pose2rgbd.placemap.place import GlobalDescriber


def _low_rank(n: int, d: int, rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rank, d))
    coef = rng.normal(size=(n, rank)) * np.linspace(3.0, 0.2, rank)
    return (coef @ base + 0.01 * rng.normal(size=(n, d)) + 0.5).astype(np.float32)


def test_the_pca_has_the_principal_axes_of_an_svd_signed_by_their_largest_component() -> None:
    """The PCA from the Gram matrix, built in blocks smaller than the sample, gives the right singular vectors of the
    centred data (each axis up to its sign, which is fixed: the largest component positive), orthonormal, in the
    order of the singular values."""
    x = _low_rank(300, 1024, 20)
    g = GlobalDescriber("vlad", centroids=np.zeros((8, 128), np.float32))
    g.learn_pca(x, 32, block=128)
    assert g.pca is not None and g.pca.shape == (32, 1024) and g.pca_mean is not None
    np.testing.assert_allclose(g.pca_mean, x.astype(np.float64).mean(axis=0), atol=1e-6)
    x64 = x.astype(np.float64)
    _, s, vt = np.linalg.svd(x64 - x64.mean(axis=0), full_matrices=False)
    p = g.pca.astype(np.float64)
    np.testing.assert_allclose(np.abs(np.sum(p[:20] * vt[:20], axis=1)), 1.0, atol=1e-5)  # the signal's axes
    np.testing.assert_allclose(p @ p.T, np.eye(32), atol=1e-5)
    var = np.var((x64 - x64.mean(axis=0)) @ p.T, axis=0)
    assert np.all(np.diff(var) <= 1e-9 * var[0])  # largest first
    np.testing.assert_allclose(var[:20], s[:20] ** 2 / len(x), rtol=1e-5)
    largest = p[np.arange(32), np.argmax(np.abs(p), axis=1)]
    assert np.all(largest > 0)
    # fewer samples than dimensions asked: at most n - 1 axes (the centred data's rank)
    g.learn_pca(x[:10], 32)
    assert g.pca.shape == (9, 1024)


def test_keyframe_descriptors_learn_their_pca_from_at_most_the_samples_asked() -> None:
    """The PCA's sample is at most ``pca_samples`` keyframes, evenly spread (it was up to twice that); every
    keyframe is described, chunk by chunk, the same as one at a time; the descriptors are unit vectors."""
    rng = np.random.default_rng(1)
    centroids = rng.random((8, 128)).astype(np.float32)
    descs = [rng.integers(0, 60, (int(rng.integers(20, 60)), 128)).astype(np.uint8) for _ in range(97)]
    g = GlobalDescriber("vlad", centroids=centroids)
    seen: list[int] = []

    def desc_of(k: int) -> np.ndarray:
        seen.append(k)
        return descs[k]

    out = g.describe_keyframes(desc_of, len(descs), 16, pca_samples=50, chunk=7)
    sample = seen[: len(seen) - len(descs)]
    assert len(sample) == 50 and sample[0] == 0 and sample[-1] == 96 and len(set(sample)) == 50
    assert out.shape == (97, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one = np.concatenate([g.finish(g.raw_vlad(d)[None]) for d in descs])
    np.testing.assert_allclose(out, one, atol=1e-6)

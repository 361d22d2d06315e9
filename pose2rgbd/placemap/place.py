"""Place recognition: a global descriptor per image, learned from the map's own SIFT features at build time.

``vlad`` (default): VLAD over a visual vocabulary -- k-means centroids of the map's RootSIFT descriptors; an image's
descriptor is, per centroid, the sum of its descriptors' residuals to that centroid, intra-normalized (each
centroid's block to unit length, so bursty repeated texture does not dominate), signed-square-rooted, projected
by a PCA learned on the keyframes' VLADs and normalized to unit length. It is built from rotation-invariant local
features and ignores where in the image they are, so a query at another heading than the survey's finds the same
place (a thumbnail compares pixels in place and does not). ``thumbnail``: a grey thumbnail, zero-mean and
unit-norm -- the retrieval baseline, kept for the comparison in the experiments.

Similarity is the dot product of unit descriptors (cosine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.placemap.features import root_sift, to_gray

GLOBAL_KINDS = ("vlad", "thumbnail")


@dataclass
class GlobalConfig:
    """The global descriptor of place recognition."""

    kind: str = help_field("vlad", "vlad (visual vocabulary over the map's SIFT; survives heading changes) | thumbnail")
    clusters: int = ranged_field(64, "vlad: visual words (k-means centroids)", 2, 1024)
    dims: int = ranged_field(256, "vlad: descriptor dimensions after PCA (at most the keyframe count)", 8, 8192)
    thumb: int = ranged_field(16, "thumbnail: side in pixels", 4, 128)
    sample: int = ranged_field(100000, "descriptors sampled to learn the vocabulary", 1000, 10000000)

    def __post_init__(self) -> None:
        if self.kind not in GLOBAL_KINDS:
            raise ConfigError(f"global.kind {self.kind!r} is not one of {', '.join(GLOBAL_KINDS)}")


class GlobalDescriber:
    """Computes global descriptors: :meth:`learn` from keyframe descriptors, or rebuilt from :meth:`arrays`."""

    def __init__(
        self,
        kind: str,
        *,
        centroids: np.ndarray | None = None,
        pca_mean: np.ndarray | None = None,
        pca: np.ndarray | None = None,
        thumb: int = 16,
    ) -> None:
        if kind not in GLOBAL_KINDS:
            raise ConfigError(f"global descriptor kind {kind!r} is not one of {', '.join(GLOBAL_KINDS)}")
        self.kind = kind
        self.centroids = None if centroids is None else np.asarray(centroids, np.float32)
        self.pca_mean = None if pca_mean is None else np.asarray(pca_mean, np.float32)
        self.pca = None if pca is None else np.asarray(pca, np.float32)
        self.thumb = int(thumb)

    # ------------------------------------------------------------------ learning
    @classmethod
    def learn_vocabulary(cls, desc: np.ndarray, cfg: GlobalConfig, seed: int = 0) -> GlobalDescriber:
        """k-means (OpenCV, k-means++ seeding) on a seeded sample of the map's uint8 SIFT descriptors."""
        if cfg.kind == "thumbnail":
            return cls("thumbnail", thumb=cfg.thumb)
        d = np.asarray(desc)
        if len(d) > cfg.sample:
            d = d[np.random.default_rng(seed).choice(len(d), cfg.sample, replace=False)]
        k = int(min(cfg.clusters, max(2, len(d) // 8)))
        if len(d) < 2 * k:
            raise ConfigError(f"too few local features ({len(d)}) to learn a visual vocabulary of {k} words")
        cv2.setRNGSeed(seed)
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 25, 1e-4)
        _, _, centroids = cv2.kmeans(root_sift(d), k, None, crit, 1, cv2.KMEANS_PP_CENTERS)  # type: ignore[call-overload]
        return cls("vlad", centroids=centroids)

    def learn_pca(self, raw: np.ndarray, dims: int, *, block: int = 512) -> None:
        """PCA of the keyframes' raw VLADs (N, k*128): the projection :meth:`finish` applies.

        From the N x N Gram matrix of the centred VLADs (float64, built ``block`` rows at a time from the float32
        input) and its largest ``dims`` eigenpairs (SciPy ``eigh``), not an SVD of the centred N x k*128 matrix:
        the same principal axes (the right singular vectors are ``U^T X / s``), without a float64 copy of the data
        and LAPACK's work arrays beside it (1.26 GB at the peak of a map of 2,161 keyframes). Each axis is signed
        so that its largest component is positive (an SVD's signs are LAPACK's choice)."""
        if self.kind != "vlad":
            return
        from scipy.linalg import eigh

        x = np.asarray(raw, np.float32)
        n = len(x)
        mean = x.mean(axis=0, dtype=np.float64)
        dims = int(min(dims, max(1, n - 1), x.shape[1]))
        starts = range(0, n, block)

        def centred(a: int) -> np.ndarray:
            c: np.ndarray = np.asarray(x[a : a + block], np.float64) - mean
            return c

        gram = np.empty((n, n))
        for a in starts:
            xa = centred(a)
            for b in starts:
                if b >= a:
                    gram[a : a + block, b : b + block] = xa @ centred(b).T
                    gram[b : b + block, a : a + block] = gram[a : a + block, b : b + block].T
        w, u = eigh(gram, subset_by_index=[n - dims, n - 1], overwrite_a=True)
        del gram
        w, u = w[::-1], u[:, ::-1]  # largest first
        vt = np.zeros((dims, x.shape[1]))
        for a in starts:
            vt += u[a : a + block].T @ centred(a)
        vt /= np.sqrt(np.maximum(w, w[0] * 1e-12 if w[0] > 0 else 1.0))[:, None]
        sign = np.sign(vt[np.arange(dims), np.argmax(np.abs(vt), axis=1)])
        self.pca_mean = mean.astype(np.float32)
        self.pca = (vt * np.where(sign == 0, 1.0, sign)[:, None]).astype(np.float32)

    # ------------------------------------------------------------------ describing
    def raw_vlad(self, desc: np.ndarray) -> np.ndarray:
        """(k * 128,) float32 intra-normalized, signed-square-rooted VLAD of uint8 SIFT descriptors."""
        assert self.centroids is not None
        c = self.centroids
        k = len(c)
        out = np.zeros((k, c.shape[1]), np.float32)
        if len(desc):
            r = root_sift(desc)
            assign = np.argmax(r @ c.T - 0.5 * np.sum(c * c, axis=1)[None], axis=1)  # nearest centroid (L2)
            np.add.at(out, assign, r - c[assign])
        n = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(n, 1e-12)
        v = out.reshape(-1)
        v = np.sign(v) * np.sqrt(np.abs(v))
        unit: np.ndarray = v / max(float(np.linalg.norm(v)), 1e-12)
        return unit

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Raw VLADs (N, k*128) -> unit PCA descriptors (N, D)."""
        x = np.atleast_2d(np.asarray(raw, np.float32))
        if self.pca is not None and self.pca_mean is not None:
            x = (x - self.pca_mean) @ self.pca.T
        unit: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return unit

    def describe_keyframes(
        self, desc_of: Callable[[int], np.ndarray], n: int, dims: int, *, pca_samples: int = 4000, chunk: int = 256
    ) -> np.ndarray:
        """(n, D) unit VLADs of ``n`` keyframes whose uint8 SIFT descriptors ``desc_of(k)`` gives: the PCA learned
        on at most ``pca_samples`` of them (evenly spread; their raw VLADs, k * 128 float32 each, written into one
        array: 32 kB a keyframe at 64 words), then every keyframe projected ``chunk`` at a time -- memory stays
        bounded by the sample and a chunk, not the whole map."""
        assert self.kind == "vlad"
        assert self.centroids is not None
        rows = np.unique(np.linspace(0, n - 1, min(n, pca_samples)).round().astype(np.int64))
        sample = np.empty((len(rows), self.centroids.size), np.float32)
        for r, k in enumerate(rows):
            sample[r] = self.raw_vlad(desc_of(int(k)))
        self.learn_pca(sample, dims)
        del sample
        out = np.empty((n, len(self.pca) if self.pca is not None else self.centroids.size), np.float32)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            out[a:b] = self.finish(np.stack([self.raw_vlad(desc_of(k)) for k in range(a, b)]))
        return out

    def thumbnail(self, image: np.ndarray) -> np.ndarray:
        g = cv2.resize(to_gray(image), (self.thumb, self.thumb), interpolation=cv2.INTER_AREA).astype(np.float32)
        g = g.reshape(-1) - g.mean()
        unit: np.ndarray = g / max(float(np.linalg.norm(g)), 1e-6)
        return unit

    def describe(self, image: np.ndarray, desc: np.ndarray) -> np.ndarray:
        """The unit global descriptor (D,) of one image with its uint8 SIFT descriptors."""
        if self.kind == "thumbnail":
            return self.thumbnail(image)
        out: np.ndarray = self.finish(self.raw_vlad(desc))[0]
        return out

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict[str, np.ndarray]:
        out = {"kind": np.array(self.kind), "thumb": np.array(self.thumb)}
        for name in ("centroids", "pca_mean", "pca"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> GlobalDescriber:
        return cls(
            str(a["kind"]),
            centroids=a.get("centroids"),
            pca_mean=a.get("pca_mean"),
            pca=a.get("pca"),
            thumb=int(a.get("thumb", 16)),
        )

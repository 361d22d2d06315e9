"""Pose covariance and out-of-distribution threshold of a localizer, calibrated on validation frames.

What is measured: for every validation frame, the localizer's error against the ground-truth pose,

* position: ``t_est - t_true`` in the world frame (metres);
* orientation: the rotation vector of ``R_est @ R_true.T`` (radians), i.e. the small rotation about the
  **world frame's fixed axes** that takes the true orientation to the estimate. That is the convention of
  ``geometry_msgs/PoseWithCovariance`` (REP-103; order x, y, z, rotation about X, about Y, about Z of the
  parent frame, which is the world frame the pose is published in).

The 6x6 covariance is the second moment ``E[e e^T]`` of these errors (about zero, not about their mean, so a
bias counts as uncertainty too), symmetrized and floored to be positive definite. With
``confidence_bins`` > 1 the frames are also split into bins of equal count by the model's confidence, and
each bin's mean squared position / orientation error relative to all frames gives a scale factor: at run time
the covariance is scaled by the factors interpolated at the image's confidence (the position block by
``s_p``, the orientation block by ``s_r``, the cross terms by ``sqrt(s_p s_r)``, which keeps it positive
definite). The out-of-distribution threshold is the ``ood_quantile`` quantile of the validation confidences:
an image whose confidence is lower than that of 95 % (default) of the validation images is flagged.

The result is a small YAML sidecar (:func:`save_calibration`, written atomically; the checkpoint is never
touched), read by the localize node (``covariance_file``) with :func:`load_calibration`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.transforms import pose_errors
from pose2rgbd.progress import bar

FORMAT = "pose2rgbd-localize-calibration"
VERSION = 1
CHI2_6_MEDIAN = 5.348120627447122  # median of the chi-square distribution with 6 degrees of freedom
MIN_FRAMES = 12  # fewer errors than this cannot estimate a 6x6 second moment with any confidence
POSITION_FLOOR_M2 = 1e-6  # eigenvalue floors: (1 mm)^2 and (0.06 deg)^2
ORIENTATION_FLOOR_RAD2 = 1e-6

# Without a calibration file the node publishes this (documented in docs/ros.md): a standard deviation of
# 10 m in position and 30 degrees about each axis -- larger than the errors of any localizer worth running, so
# a filter that fuses the pose trusts it little until it is calibrated.
DEFAULT_POSITION_SIGMA_M = 10.0
DEFAULT_ORIENTATION_SIGMA_DEG = 30.0


def default_covariance() -> np.ndarray:
    """The conservative 6x6 covariance used without a calibration file (see the constants above)."""
    return np.diag([DEFAULT_POSITION_SIGMA_M**2] * 3 + [math.radians(DEFAULT_ORIENTATION_SIGMA_DEG) ** 2] * 3)


@dataclass
class Calibration:
    """A localizer's calibrated covariance (world frame, PoseWithCovariance order) and OOD threshold."""

    covariance: np.ndarray  # (6, 6) SPD: x, y, z [m^2], rot about world X, Y, Z [rad^2]
    n_frames: int
    ood_quantile: float = 0.05
    ood_threshold: float = 0.0  # confidence below this: out of distribution
    bin_confidence: list[float] = field(default_factory=list)  # centres (median confidence) of the bins
    bin_position_scale: list[float] = field(default_factory=list)
    bin_orientation_scale: list[float] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)  # medians / 90th percentiles, for the record
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint, model kind, dataset, split
    # a localizer that gives each fix its own covariance (the structure localizer): the factor that makes it match
    # the validation errors (0: none; the fixed covariance above is used)
    information_scale: float = 0.0

    def __post_init__(self) -> None:
        self.covariance = check_covariance(self.covariance, "calibration covariance")
        n = len(self.bin_confidence)
        if len(self.bin_position_scale) != n or len(self.bin_orientation_scale) != n:
            raise ConfigError("calibration: the confidence bins have lists of different lengths")
        if any(not (math.isfinite(s) and s > 0) for s in self.bin_position_scale + self.bin_orientation_scale):
            raise ConfigError("calibration: confidence bin scales must be finite and > 0")
        if not 0.0 <= self.ood_quantile < 1.0 or not math.isfinite(self.ood_threshold):
            raise ConfigError("calibration: ood_quantile must be in [0, 1) and ood_threshold finite")
        if not (math.isfinite(self.information_scale) and self.information_scale >= 0):
            raise ConfigError("calibration: information_scale must be finite and >= 0")

    def covariance_of_fix(self, information_covariance: np.ndarray) -> np.ndarray:
        """A fix's own covariance (from its inliers' information) scaled by :attr:`information_scale`; without
        that factor (a file calibrated for another localizer) the fixed covariance."""
        if self.information_scale > 0:
            return np.asarray(information_covariance) * self.information_scale
        return self.covariance.copy()

    def covariance_at(self, confidence: float | None = None) -> np.ndarray:
        """The covariance for an image of this confidence (the bins' scales interpolated; ``None`` or no bins:
        the covariance of all validation frames)."""
        if confidence is None or not self.bin_confidence or not math.isfinite(confidence):
            return self.covariance.copy()
        sp = float(np.interp(confidence, self.bin_confidence, self.bin_position_scale))
        sr = float(np.interp(confidence, self.bin_confidence, self.bin_orientation_scale))
        d = np.sqrt(np.array([sp] * 3 + [sr] * 3))
        return self.covariance * d[:, None] * d[None, :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "frame": "world: position error t_est - t_true; orientation error rotvec(R_est R_true^T) about the "
            "world's fixed axes (PoseWithCovariance order x y z rotX rotY rotZ)",
            "covariance": [[float(v) for v in row] for row in self.covariance],
            "n_frames": int(self.n_frames),
            "ood_quantile": float(self.ood_quantile),
            "ood_threshold": float(self.ood_threshold),
            "confidence_bins": {
                "confidence": [float(v) for v in self.bin_confidence],
                "position_scale": [float(v) for v in self.bin_position_scale],
                "orientation_scale": [float(v) for v in self.bin_orientation_scale],
            },
            "errors": {k: float(v) for k, v in self.errors.items()},
            "information_scale": float(self.information_scale),
            "source": {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in self.source.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "calibration") -> Calibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{where}: not a localize calibration file (no 'format: {FORMAT}')")
        if int(d.get("version", 0)) != VERSION:
            raise ConfigError(f"{where}: calibration version {d.get('version')!r}, this build reads {VERSION}")
        bins = d.get("confidence_bins") or {}
        try:
            return cls(
                covariance=np.asarray(d["covariance"], dtype=np.float64),
                n_frames=int(d["n_frames"]),
                ood_quantile=float(d.get("ood_quantile", 0.05)),
                ood_threshold=float(d.get("ood_threshold", 0.0)),
                bin_confidence=[float(v) for v in bins.get("confidence", [])],
                bin_position_scale=[float(v) for v in bins.get("position_scale", [])],
                bin_orientation_scale=[float(v) for v in bins.get("orientation_scale", [])],
                errors={str(k): float(v) for k, v in (d.get("errors") or {}).items()},
                source=dict(d.get("source") or {}),
                information_scale=float(d.get("information_scale", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise ConfigError(f"{where}: {e}") from e
            raise ConfigError(f"{where}: malformed calibration file ({type(e).__name__}: {e})") from e


def check_covariance(c: Any, what: str = "covariance") -> np.ndarray:
    """A 6x6 finite, symmetric, positive definite matrix (float64 copy) or :class:`ConfigError`."""
    a = np.asarray(c, dtype=np.float64)
    if a.shape != (6, 6):
        raise ConfigError(f"{what}: expected 6x6, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{what}: has non-finite values")
    if not np.allclose(a, a.T, rtol=1e-9, atol=1e-12):
        raise ConfigError(f"{what}: not symmetric")
    if np.linalg.eigvalsh(a).min() <= 0:
        raise ConfigError(f"{what}: not positive definite")
    return a.copy()


def rotation_errors_world(T_est: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """``(N, 3)`` rotation vectors of ``R_est @ R_true.T`` (radians, about the world's fixed axes)."""
    from scipy.spatial.transform import Rotation

    R_est = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)[:, :3, :3]
    R_true = np.asarray(T_true, dtype=np.float64).reshape(-1, 4, 4)[:, :3, :3]
    return np.asarray(Rotation.from_matrix(R_est @ np.transpose(R_true, (0, 2, 1))).as_rotvec())


def _second_moment_spd(e: np.ndarray) -> np.ndarray:
    c = e.T @ e / len(e)
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    floor = np.array([POSITION_FLOOR_M2] * 3 + [ORIENTATION_FLOOR_RAD2] * 3)
    # floor the eigenvalues (a localizer that is exact on validation frames is not exact everywhere)
    w = np.maximum(w, floor.min())
    c = (v * w) @ v.T
    c = 0.5 * (c + c.T) + np.diag(floor)
    return c


def compute_calibration(
    T_est: np.ndarray,
    T_true: np.ndarray,
    confidence: np.ndarray,
    *,
    ood_quantile: float = 0.05,
    confidence_bins: int = 4,
    source: dict[str, Any] | None = None,
    information: np.ndarray | None = None,
) -> Calibration:
    """The :class:`Calibration` of estimates ``T_est`` against ``T_true`` (both ``(N, 4, 4)``) with the
    model's ``confidence`` ``(N,)`` (see the module docstring). With ``information`` ``(N, 6, 6)`` (each fix's
    own covariance from its inliers) also the :attr:`Calibration.information_scale` that makes those match the
    errors: the median squared Mahalanobis error over the median of chi-square with 6 degrees of freedom (a
    median, so that a few gross errors do not inflate every covariance). Raises :class:`ConfigError` for fewer than
    :data:`MIN_FRAMES` frames or non-finite estimates."""
    T_est = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)
    T_true = np.asarray(T_true, dtype=np.float64).reshape(-1, 4, 4)
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    n = len(T_est)
    if len(T_true) != n or len(conf) != n:
        raise ConfigError(f"calibration: {n} estimates, {len(T_true)} true poses, {len(conf)} confidences")
    if n < MIN_FRAMES:
        raise ConfigError(
            f"calibration needs at least {MIN_FRAMES} validation frames, got {n}; use a larger split "
            "(--split all) or a larger dataset"
        )
    ok = np.all(np.isfinite(T_est.reshape(n, -1)), axis=1) & np.isfinite(conf)
    if not ok.all():
        raise ConfigError(
            f"calibration: the localizer returned non-finite poses or confidences for {int((~ok).sum())} frames"
        )
    if not 1 <= confidence_bins <= 100:
        raise ConfigError("calibration: confidence_bins must be in [1, 100]")
    if not 0.0 <= ood_quantile < 1.0:
        raise ConfigError("calibration: ood_quantile must be in [0, 1)")
    dp = T_est[:, :3, 3] - T_true[:, :3, 3]
    dr = rotation_errors_world(T_est, T_true)
    e = np.concatenate([dp, dr], axis=1)
    cov = _second_moment_spd(e)
    pos_err, rot_err = pose_errors(T_est, T_true)
    rot_err_deg = np.degrees(rot_err)
    errors = {
        "position_median_m": float(np.median(pos_err)),
        "position_p90_m": float(np.percentile(pos_err, 90)),
        "orientation_median_deg": float(np.median(rot_err_deg)),
        "orientation_p90_deg": float(np.percentile(rot_err_deg, 90)),
        "confidence_median": float(np.median(conf)),
    }
    nb = int(min(confidence_bins, n // MIN_FRAMES)) if confidence_bins > 1 else 1
    centres: list[float] = []
    sp: list[float] = []
    sr: list[float] = []
    if nb > 1:
        p2_all = max(float(np.mean(np.sum(dp**2, axis=1))), 3 * POSITION_FLOOR_M2)
        r2_all = max(float(np.mean(np.sum(dr**2, axis=1))), 3 * ORIENTATION_FLOOR_RAD2)
        for idx in np.array_split(np.argsort(conf, kind="stable"), nb):
            centres.append(float(np.median(conf[idx])))
            sp.append(max(float(np.mean(np.sum(dp[idx] ** 2, axis=1))), 3 * POSITION_FLOOR_M2) / p2_all)
            sr.append(max(float(np.mean(np.sum(dr[idx] ** 2, axis=1))), 3 * ORIENTATION_FLOOR_RAD2) / r2_all)
        if len(set(centres)) < len(centres):  # equal confidences (a model without one): no scaling
            centres, sp, sr = [], [], []
    info_scale = 0.0
    if information is not None:
        info = np.asarray(information, dtype=np.float64).reshape(n, 6, 6)
        m2 = np.array([float(e[k] @ np.linalg.solve(info[k], e[k])) for k in range(n)])
        info_scale = float(np.median(m2) / CHI2_6_MEDIAN)
        errors["information_scale"] = info_scale
    return Calibration(
        information_scale=info_scale,
        covariance=cov,
        n_frames=n,
        ood_quantile=float(ood_quantile),
        ood_threshold=float(np.quantile(conf, ood_quantile)) if ood_quantile > 0 else 0.0,
        bin_confidence=centres,
        bin_position_scale=sp,
        bin_orientation_scale=sr,
        errors=errors,
        source=dict(source or {}),
    )


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write ``cal`` as YAML to ``path`` atomically."""
    header = (
        "# Localizer covariance calibration (pose2rgbd localize calibrate); read by the localize node's\n"
        "# covariance_file parameter. Units: m^2 (x y z), rad^2 (rotations about the world axes).\n"
    )
    return write_text_atomic(path, header + yaml.safe_dump(cal.to_dict(), sort_keys=False, default_flow_style=None))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; problems raise :class:`ConfigError` naming the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"covariance file not found: {p} (write one with `pose2rgbd localize calibrate`)")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    return Calibration.from_dict(data, str(p))


def localize_frames(
    localizer: Any,
    read_rgb: Any,
    frames: Iterable[int],
    *,
    batch_size: int = 16,
    crop_scale: float = 0.0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(T_world_cam (N, 4, 4), confidence (N,))`` of ``localizer`` on the images ``read_rgb(i)`` of
    ``frames``, each prepared as the node does (:func:`pose2rgbd.inference.images.prepare_for_model`)."""
    from pose2rgbd.inference.images import prepare_for_model

    idx = list(frames)
    Ts: list[np.ndarray] = []
    cs: list[np.ndarray] = []
    hw = localizer.input_hw
    for k in bar(range(0, len(idx), batch_size), progress=progress, desc="localize", unit="batch"):
        model = getattr(localizer, "model", None)
        batch = np.stack(
            [prepare_for_model(model, read_rgb(i), hw, crop_scale=crop_scale) for i in idx[k : k + batch_size]]
        )
        res = localizer.localize(batch)
        Ts.append(res.T_world_cam)
        cs.append(res.confidence)
    if not Ts:
        return np.zeros((0, 4, 4)), np.zeros(0, np.float32)
    return np.concatenate(Ts), np.concatenate(cs)


def calibrate(
    checkpoint: str | Path,
    dataset: str | Path,
    *,
    split: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    crop_scale: float = 0.0,
    max_frames: int = 0,
    ood_quantile: float = 0.05,
    confidence_bins: int = 4,
    progress: bool = False,
) -> tuple[Calibration, list[str]]:
    """Calibrate ``checkpoint`` (an image -> pose model) on ``dataset``'s validation frames.

    ``split``: ``random`` | ``route`` | ``all`` (``None``: the split the checkpoint was trained with, same seed,
    so the frames are exactly its validation frames; a checkpoint of another dataset: ``all``). Returns the
    calibration and notes for the user (e.g. frames that may have been trained on)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference import EngineConfig, LocalizeEngine, load_for_serving
    from pose2rgbd.training.splits import SPLIT_KINDS, split_from_config

    notes: list[str] = []
    ds = Dataset(dataset)
    loaded = load_for_serving(EngineConfig(checkpoint=str(checkpoint), device=device, precision="fp32", warmup=0))
    if loaded.family.engine != "localize":
        raise ConfigError(
            f"{checkpoint}: a {loaded.kind!r} model does not localize images (its engine is "
            f"{loaded.family.engine!r}); calibrate an image -> pose checkpoint"
        )
    engine = LocalizeEngine(EngineConfig(device=device, precision="fp32", warmup=0), loaded)
    other = loaded.dataset_fingerprint != ds.fingerprint()
    tc = loaded.train_config or {}
    kind = split or ("all" if other else str(tc.get("split", "random")))
    if kind == "all":
        frames = np.arange(len(ds))
    elif kind in SPLIT_KINDS:  # the checkpoint's own split settings (fractions, every_nth): its validation frames
        frames = split_from_config(ds.frames.source_id, ds.frames.stamp_ns, {**tc, "split": kind}).val
    else:
        raise ConfigError(f"split {kind!r} is not one of {', '.join(SPLIT_KINDS)}, all")
    if other:
        notes.append("the checkpoint was trained on another dataset (fingerprint differs)")
    elif kind == "all" or kind != tc.get("split", kind):
        notes.append(f"calibrated on the {kind} split: some frames may have been trained on (errors too small)")
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    T_est, conf = localize_frames(
        engine, ds.read_rgb, frames.tolist(), batch_size=batch_size, crop_scale=crop_scale, progress=progress
    )
    source = {
        "checkpoint": str(checkpoint),
        "model_kind": loaded.kind,
        "dataset": str(ds.path),
        "dataset_fingerprint": ds.fingerprint(),
        "split": kind,
        "crop_scale": crop_scale,
    }
    cal = compute_calibration(
        T_est, ds.frames.T_world_cam[frames], conf, ood_quantile=ood_quantile,
        confidence_bins=confidence_bins, source=source,
    )  # fmt: skip
    return cal, notes


__all__ = [
    "DEFAULT_ORIENTATION_SIGMA_DEG",
    "DEFAULT_POSITION_SIGMA_M",
    "Calibration",
    "calibrate",
    "calibrate_map",
    "check_covariance",
    "compute_calibration",
    "default_covariance",
    "load_calibration",
    "localize_frames",
    "rotation_errors_world",
    "save_calibration",
    "write_text_atomic",
]


def calibrate_map(
    map_path: str | Path,
    dataset: str | Path,
    *,
    split: str | None = None,
    structure: Any = None,
    max_frames: int = 0,
    ood_quantile: float = 0.05,
    progress: bool = False,
) -> tuple[Calibration, list[str]]:
    """Calibrate the structure localizer of the place map ``map_path`` on ``dataset``'s frames that are not
    keyframes: by default the validation frames of the split the map was selected with (``split``: another
    split's validation frames, or ``all`` frames outside the map). Images are localized one by one without priors;
    the frames with a fix give the covariance, the :attr:`Calibration.information_scale` and the OOD threshold."""
    import dataclasses

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.splits import SPLIT_KINDS, make_split
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.map import PlaceMap

    ds = Dataset(dataset)
    pm = PlaceMap(map_path)
    pm.check_dataset(ds.fingerprint(), str(dataset))
    sel = pm.manifest.get("selection", {})
    kind = split or sel.get("split") or "all"
    notes: list[str] = []
    if kind == "all":
        frames = np.arange(len(ds))
    elif kind in SPLIT_KINDS:
        vf, tf = float(sel.get("val_fraction", 0.1)), float(sel.get("test_fraction", 0.1))
        sp = make_split(ds.frames.source_id, ds.frames.stamp_ns, kind, seed=int(sel.get("seed", 0)),
                        val_fraction=vf, test_fraction=tf, every_nth=int(sel.get("every_nth", 10)))  # fmt: skip
        frames = sp.val
    else:
        raise ConfigError(f"split {kind!r} is not one of {', '.join(SPLIT_KINDS)}, all")
    inside = np.isin(frames, pm.frames)
    if inside.any():
        notes.append(f"{int(inside.sum())} of the {kind} frames are keyframes of the map: left out")
    frames = frames[~inside]
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    cfg = dataclasses.replace(structure or StructureConfig(), use_previous_fix=False)
    loc = StructureLocalizer(pm, cfg, ds.camera)  # the dataset's own frames: its camera
    fixes = [loc.localize_one(ds.read_rgb(int(i))) for i in bar(frames, progress=progress, desc="localize")]
    ok = np.array([f.ok for f in fixes], bool)
    notes.append(f"{int(ok.sum())} of {len(frames)} frames got a fix ({kind} frames outside the map)")
    if ok.sum() < MIN_FRAMES:
        raise ConfigError(
            f"only {int(ok.sum())} of {len(frames)} calibration frames got a fix (need {MIN_FRAMES}): a map of "
            "another place, or frames far from its keyframes"
        )
    good = [f for f in fixes if f.ok]
    source = {"map": str(map_path), "method": "structure", "dataset": str(ds.path),
              "dataset_fingerprint": ds.fingerprint(), "split": kind, "fix_rate": float(ok.mean())}  # fmt: skip
    cal = compute_calibration(
        np.stack([f.T_world_cam for f in good]), ds.frames.T_world_cam[frames[ok]],
        np.array([f.confidence for f in good]), ood_quantile=ood_quantile, confidence_bins=1, source=source,
        information=np.stack([f.covariance for f in good]),
    )  # fmt: skip
    return cal, notes

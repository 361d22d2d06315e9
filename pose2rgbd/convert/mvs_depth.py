"""Multi-view stereo depth as a conversion source (``convert video --depth mvs`` / ``--depth selfsup+mvs``): a
dataset and its metric poses (structure from motion aligned to GPS, :mod:`pose2rgbd.methods.selfsup_depth.metric`)
-> the same frames with the plane-sweep depth checked across views (:mod:`pose2rgbd.geometry.mvs`), NaN where no
neighbour confirms it (sky, far field, texture-less areas: never a finite guess that fusion would make a wall of).

``combine=True`` reads the dataset's own depth as a network's (Algorithm 2's export) and writes the stereo depth
where it is verified, the network's depth scaled to it per frame elsewhere, up to ``mvs.far_factor`` x the frame's
verified depth (:func:`pose2rgbd.geometry.mvs.combine_frame`). Frames without a metric pose keep the
network's depth (``combine``) or get none. Written through the conversion pipeline (atomic, ``report/``): the
report's ``samples.png`` shows the depth as written (with ``combine`` the network's depth before stereo under it),
``summary.json``'s ``mvs.written_share`` and the manifest's ``extra.depth.mvs.written_share`` the shares of the
written pixels that are stereo, the network's depth and none."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose2rgbd.config import to_dict
from pose2rgbd.convert.pipeline import DatasetPlan, Frame, SourceBase, convert
from pose2rgbd.convert.stages.depth_export import (
    KEPT_NETWORK,
    ExportResult,
    carry_report,
    keep_file,
    replace_orientation,
)
from pose2rgbd.convert.stages.depth_report import sample_frames
from pose2rgbd.convert.stages.work import Product
from pose2rgbd.dataset import Dataset, Manifest
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.mvs import MvsConfig, MvsResult, combine_frame, depth_range_from_points, mvs_sequence
from pose2rgbd.methods.selfsup_depth.metric import MetricPoses

DEPTH_CHOICES = ("selfsup", "mvs", "selfsup+mvs")


@dataclass
class _Sample:
    """A frame of ``samples.png``: the depth written, and the network's depth before stereo (``combine``)."""

    frame: int
    written: np.ndarray
    network: np.ndarray | None
    stereo_share: float  # of the frame's pixels, those whose written depth is the verified stereo


class MvsDepthSource(SourceBase):
    """``dataset`` rewritten with multi-view stereo depth from ``metric`` poses (see the module docstring)."""

    kind = "mvs-depth"

    def __init__(
        self,
        dataset: str | Path | Dataset,
        metric: MetricPoses,
        *,
        combine: bool = False,
        cfg: MvsConfig | None = None,
        inputs: tuple[str | Path, ...] = (),
    ) -> None:
        self.ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        if len(metric.label) != len(self.ds):
            raise ConfigError(f"metric poses of {len(metric.label)} frames for the {len(self.ds)} frames of "
                              f"{self.ds.path}")  # fmt: skip
        if combine and not self.ds.has_depth:
            raise ConfigError(f"{self.ds.path}: --depth selfsup+mvs needs the network's depth in the dataset")
        self.mp, self.combine, self.cfg = metric, combine, cfg or MvsConfig()
        self._inputs = [Path(p) for p in (self.ds.path, *inputs)]
        self._res: MvsResult | None = None
        self._scales: list[float] = []
        self._pixels = {"stereo": 0, "network": 0, "none": 0}  # written pixels by where their depth comes from
        self._samples: list[_Sample] = []

    def plan(self, *, progress: bool) -> DatasetPlan:
        ds, mp, cfg = self.ds, self.mp, self.cfg
        if not mp.ok.any():
            raise ConfigError(f"{ds.path}: no frame has a metric pose: multi-view stereo needs structure from "
                              "motion aligned to GPS (use --depth selfsup, whose network covers frames without "
                              "one)")  # fmt: skip
        if cfg.min_depth and cfg.max_depth:
            rng = (cfg.min_depth, cfg.max_depth)
        else:
            try:
                rng = depth_range_from_points(np.concatenate([p[:, 2] for p in mp.points.values()] or [np.zeros(0)]))
            except ConfigError as e:
                raise ConfigError(f"{ds.path}: the stereo's depth range comes from the points structure from motion "
                                  f"triangulated, and there are too few: {e}. Convert with --depth selfsup (the "
                                  "network's depth needs no such points), or, from Python, give the range: "
                                  "convert_video_with_depth(..., mvs_cfg=MvsConfig(min_depth=..., "
                                  "max_depth=...))") from e  # fmt: skip
        T_world_cam = np.where(mp.ok[:, None, None], mp.T_world_cam, ds.frames.T_world_cam)
        self._res = mvs_sequence(ds.read_rgb, ds.camera.K, T_world_cam, mp.ok, cfg, depth_range=rng,
                                 progress=progress)  # fmt: skip
        extra = dict(ds.manifest.extra)
        timeless = {k: v for k, v in self._res.info.items() if k != "seconds"}  # the manifest is fingerprinted
        depth_info: dict[str, object] = {
            "source": "selfsup+mvs" if self.combine else "mvs",
            "mvs": {**timeless, "consistent_views": cfg.consistent_views, "max_rel_depth": cfg.max_rel_depth},
            "units": "metres",
            "invalid": (
                f"NaN where no stereo depth is verified and the network's depth (scaled to the stereo) lies beyond "
                f"{cfg.far_factor:g} x the frame's 95th percentile of verified depth; the network gives sky a finite "
                "depth, so sky nearer than that is written as a surface (mask it before planning)"
                if self.combine
                else "NaN where no neighbouring frame confirms the stereo depth (sky, far field, no texture)"
            ),
        }
        if self.combine:
            depth_info["network"] = extra.get("depth", {})
            depth_info["combined"] = (f"stereo where verified, the network scaled to it per frame elsewhere up to "
                                      f"{cfg.far_factor} x the frame's 95th percentile of verified depth")  # fmt: skip
        extra["depth"] = depth_info
        if not self.combine:
            extra["poses"] = {"kind": "metric", "from": "structure from motion (COLMAP) aligned to the GPS positions "
                              "by a robust Sim(3); frames without one keep the GPS poses (and get no depth)",
                              **mp.info}  # fmt: skip
            written = "structure from motion (COLMAP) aligned to the GPS positions by a Sim(3) (extra.poses)"
            replace_orientation(extra, written, int((~mp.ok).sum()), len(ds))
        m = ds.manifest
        man = Manifest(name=m.name, camera=ds.camera, depth_kind="metric", rgb_encoding=m.rgb_encoding,
                       world_frame=m.world_frame, camera_frame=m.camera_frame, datum=m.datum, sources=m.sources,
                       extra=extra)  # fmt: skip
        f = ds.frames
        T_out = f.T_world_cam if self.combine else T_world_cam  # an Algorithm 2 export already has its metric poses
        return DatasetPlan(man, f.stamp_ns, T_out, {"frames": {"total": len(ds)}, "mvs": dict(self._res.info)},
                           lla=f.latlonalt, source_id=f.source_id)  # fmt: skip

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        assert self._res is not None
        shown = set(sample_frames(len(self.ds)))
        for i in range(len(self.ds)):
            d = self._res.depth[i]
            stereo = np.isfinite(d)
            net = None
            if self.combine:
                net = self.ds.read_depth(i)
                if self.mp.ok[i]:
                    c = combine_frame(d, net, far_factor=self.cfg.far_factor)
                    d, s, stereo = c.depth, c.scale, c.stereo
                else:
                    d, s, stereo = net, 1.0, np.zeros(net.shape, bool)
                self._scales.append(s)
            n_stereo, n_finite = int(stereo.sum()), int(np.isfinite(d).sum())
            self._pixels["stereo"] += n_stereo
            self._pixels["network"] += n_finite - n_stereo
            self._pixels["none"] += d.size - n_finite
            if i in shown:
                self._samples.append(_Sample(i, d, net, n_stereo / d.size))
            yield Frame(i, self.ds.read_rgb(i), d, f"frame {i}")

    def written_share(self) -> dict[str, float]:
        """Shares of the written pixels (all frames) by where their depth comes from: ``stereo`` (verified across
        views), ``network`` (the network's depth, scaled to the stereo per frame) and ``none`` (NaN)."""
        total = max(sum(self._pixels.values()), 1)
        return {k: round(v / total, 4) for k, v in self._pixels.items()}

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        """The stereo's numbers, ``samples.png`` of the depth written, and the report of the dataset it rewrites
        (the GPS sync's ``sync.png`` and ``track.png``, the network's ``scale.png`` and ``trajectory.png``, its
        ``summary.json`` under ``before_stereo``; not its ``samples.png``, the network's depth alone): that dataset
        is in the conversion's work folder, which goes once the output is in place."""
        self._samples_figure(folder / "samples.png")
        earlier = carry_report(self.ds.path / "report", folder, skip=frozenset({"samples.png"}))
        if earlier is not None:
            plan.summary["before_stereo"] = earlier
        plan.summary["frames"] = plan.summary["frames"]["written"]
        share = self.written_share()
        plan.summary["mvs"] = {**plan.summary["mvs"], "written_share": share}
        depth = plan.manifest.extra["depth"]
        depth["mvs"] = {**depth["mvs"], "written_share": share}
        network = depth.get("network", {})
        kept = network.get("checkpoint")
        if self.combine and kept == KEPT_NETWORK and (self.ds.path / KEPT_NETWORK).is_file():
            keep_file(self.ds.path / KEPT_NETWORK, folder.parent, KEPT_NETWORK)  # the network goes on with its depth
        if self._scales:
            s = np.asarray(self._scales)
            plan.summary["network_to_stereo_scale"] = {"median": float(np.median(s)),
                                                       "p5": float(np.percentile(s, 5)),
                                                       "p95": float(np.percentile(s, 95))}  # fmt: skip

    def _samples_figure(self, path: Path) -> None:
        """``samples.png``: frames, the depth written (its 2-98 % range in the title, the share that is verified
        stereo) and with ``combine`` the network's depth before stereo (in the written depth's colours)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pose2rgbd.viz import colorize_depth

        rows = 3 if self.combine else 2
        cols = max(len(self._samples), 1)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows + 0.3), squeeze=False)
        for c, smp in enumerate(self._samples):
            fin = smp.written[np.isfinite(smp.written)]
            lo, hi = np.percentile(fin, [2, 98]) if len(fin) else (1.0, 2.0)
            hi = float(max(hi, lo * 1.01))
            axes[0, c].imshow(self.ds.read_rgb(smp.frame))
            axes[0, c].set_title(f"frame {smp.frame}", fontsize=8)
            axes[1, c].imshow(colorize_depth(smp.written, float(lo), hi))
            axes[1, c].set_title(f"written: {lo:.1f}-{hi:.1f} m\n{smp.stereo_share:.0%} stereo", fontsize=8)
            if smp.network is not None:
                nf = smp.network[np.isfinite(smp.network)]
                nlo, nhi = np.percentile(nf, [2, 98]) if len(nf) else (np.nan, np.nan)
                axes[2, c].imshow(colorize_depth(smp.network, float(lo), hi))
                axes[2, c].set_title(f"network before stereo:\n{nlo:.1f}-{nhi:.1f} m", fontsize=8)
            for a in axes[:, c]:
                a.axis("off")
        what = "stereo where verified, the network's depth scaled to it elsewhere" if self.combine else "stereo"
        fig.suptitle(f"depth as written ({what}); grey: no depth", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)


@dataclass
class MvsStage:
    """Algorithm 2's last stage with stereo (``--depth mvs`` / ``selfsup+mvs``): the ``frames`` dataset (the
    network's export with ``combine``) rewritten with multi-view stereo depth from the ``metric`` poses stage's
    output, into the output dataset through the pipeline (so, like the export stage, it is not run in the work
    folder); :attr:`result` says what was written."""

    frames: Product
    metric: Product
    combine: bool = False
    cfg: MvsConfig | None = None
    overwrite: bool = False
    inputs: tuple[str | Path, ...] = ()
    name: str = "mvs"
    resumable: bool = False
    result: ExportResult | None = field(default=None, repr=False)

    def key(self) -> dict[str, object]:
        return {"frames": self.frames.key, "metric": self.metric.key, "combine": self.combine,
                "mvs": to_dict(self.cfg or MvsConfig())}  # fmt: skip

    def run(self, dest: Path, *, progress: bool) -> None:
        mp = MetricPoses.load(self.metric.path)
        src = MvsDepthSource(self.frames.path, mp, combine=self.combine, cfg=self.cfg, inputs=self.inputs)
        path = convert(src, dest, overwrite=self.overwrite, progress=progress, repeats=False)
        self.result = ExportResult(path=path, depth_kind="metric", frames=len(src.ds), metric=mp.info)

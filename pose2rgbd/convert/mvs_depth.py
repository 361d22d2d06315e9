"""Multi-view stereo depth as a conversion source (``convert video --depth mvs`` / ``--depth selfsup+mvs``): a
dataset and its metric poses (structure from motion aligned to GPS, :mod:`pose2rgbd.methods.selfsup_depth.metric`)
-> the same frames with the plane-sweep depth checked across views (:mod:`pose2rgbd.geometry.mvs`), NaN where no
neighbour confirms it (sky, far field, texture-less areas: never a finite guess that fusion would make a wall of).

``combine=True`` reads the dataset's own depth as a network's (Algorithm 2's export) and writes the stereo depth
where it is verified, the network's depth scaled to it per frame elsewhere, up to ``mvs.far_factor`` x the frame's
verified depth (:func:`pose2rgbd.geometry.mvs.combine_with_network`). Frames without a metric pose keep the
network's depth (``combine``) or get none. Written through the conversion pipeline (atomic, ``report/``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.config import to_dict
from pose2rgbd.convert.pipeline import DatasetPlan, Frame, SourceBase, convert
from pose2rgbd.convert.stages.depth_export import KEPT_NETWORK, ExportResult, carry_report, keep_file
from pose2rgbd.convert.stages.work import Product
from pose2rgbd.dataset import Dataset, Manifest
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.mvs import MvsConfig, MvsResult, combine_with_network, depth_range_from_points, mvs_sequence
from pose2rgbd.methods.selfsup_depth.metric import MetricPoses

DEPTH_CHOICES = ("selfsup", "mvs", "selfsup+mvs")


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

    def plan(self, *, progress: bool) -> DatasetPlan:
        ds, mp, cfg = self.ds, self.mp, self.cfg
        if not mp.ok.any():
            raise ConfigError(f"{ds.path}: no frame has a metric pose: multi-view stereo needs structure from "
                              "motion aligned to GPS (use --depth selfsup, whose network covers frames without "
                              "one)")  # fmt: skip
        if cfg.min_depth and cfg.max_depth:
            rng = (cfg.min_depth, cfg.max_depth)
        else:
            rng = depth_range_from_points(np.concatenate([p[:, 2] for p in mp.points.values()] or [np.zeros(0)]))
        T_world_cam = np.where(mp.ok[:, None, None], mp.T_world_cam, ds.frames.T_world_cam)
        self._res = mvs_sequence(ds.read_rgb, ds.camera.K, T_world_cam, mp.ok, cfg, depth_range=rng,
                                 progress=progress)  # fmt: skip
        extra = dict(ds.manifest.extra)
        depth_info: dict[str, Any] = {
            "source": "selfsup+mvs" if self.combine else "mvs",
            "mvs": {**self._res.info, "consistent_views": cfg.consistent_views, "max_rel_depth": cfg.max_rel_depth},
            "units": "metres",
            "invalid": "NaN where no neighbouring frame confirms the stereo depth (sky, far field, no texture)",
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
        m = ds.manifest
        man = Manifest(name=m.name, camera=ds.camera, depth_kind="metric", rgb_encoding=m.rgb_encoding,
                       world_frame=m.world_frame, camera_frame=m.camera_frame, datum=m.datum, sources=m.sources,
                       extra=extra)  # fmt: skip
        f = ds.frames
        T_out = f.T_world_cam if self.combine else T_world_cam  # an Algorithm 2 export already has its metric poses
        return DatasetPlan(man, f.stamp_ns, T_out, {"frames": {"total": len(ds)}, "mvs": self._res.info},
                           lla=f.latlonalt, source_id=f.source_id)  # fmt: skip

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        assert self._res is not None
        for i in range(len(self.ds)):
            d = self._res.depth[i]
            if self.combine:
                net = self.ds.read_depth(i)
                d, s = combine_with_network(d, net, far_factor=self.cfg.far_factor) if self.mp.ok[i] else (net, 1.0)
                self._scales.append(s)
            yield Frame(i, self.ds.read_rgb(i), d, f"frame {i}")

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        """The stereo's numbers, and the report of the dataset it rewrites (the GPS sync's ``sync.png`` and
        ``track.png``, the network's depth figures, their ``summary.json`` under ``before_stereo``): that dataset is
        in the conversion's work folder, which goes once the output is in place."""
        earlier = carry_report(self.ds.path / "report", folder)
        if earlier is not None:
            plan.summary["before_stereo"] = earlier
        plan.summary["frames"] = plan.summary["frames"]["written"]
        network = plan.manifest.extra["depth"].get("network", {})
        kept = network.get("checkpoint")
        if self.combine and kept == KEPT_NETWORK and (self.ds.path / KEPT_NETWORK).is_file():
            keep_file(self.ds.path / KEPT_NETWORK, folder.parent, KEPT_NETWORK)  # the network goes on with its depth
        if self._scales:
            s = np.asarray(self._scales)
            plan.summary["network_to_stereo_scale"] = {"median": float(np.median(s)),
                                                       "p5": float(np.percentile(s, 5)),
                                                       "p95": float(np.percentile(s, 95))}  # fmt: skip


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

    def key(self) -> dict[str, Any]:
        return {"frames": self.frames.key, "metric": self.metric.key, "combine": self.combine,
                "mvs": to_dict(self.cfg or MvsConfig())}  # fmt: skip

    def run(self, dest: Path, *, progress: bool) -> None:
        mp = MetricPoses.load(self.metric.path)
        src = MvsDepthSource(self.frames.path, mp, combine=self.combine, cfg=self.cfg, inputs=self.inputs)
        path = convert(src, dest, overwrite=self.overwrite, progress=progress, repeats=False)
        self.result = ExportResult(path=path, depth_kind="metric", frames=len(src.ds), metric=mp.info)

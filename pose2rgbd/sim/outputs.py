"""One simulation's outputs, put in place together: ``sim_config.yaml`` beside the dataset, bags, videos and
posed images it describes (:func:`simulate`, what ``pose2rgbd sim`` runs)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml

from pose2rgbd.atomic import StagedOutputs
from pose2rgbd.config import to_dict
from pose2rgbd.errors import OutputError
from pose2rgbd.output_guard import BAG, DATASET, FILE, POSED_IMAGES, VIDEO, check_output, refuse_existing
from pose2rgbd.sim import export as ex  # looked up at call time: tests stop an export midway by patching it
from pose2rgbd.sim.config import SimConfig, sim_config_dict
from pose2rgbd.sim.export_posed import export_posed_images


def _refuse_a_foreign_config(path: Path) -> None:
    """``sim_config.yaml`` is replaced with each run's outputs (it describes them); one that is not a simulator's
    config (the user's own file of that name: not a mapping of the config's keys with its ``seed``) is refused
    whatever ``overwrite`` says, before any work."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and "seed" in data and set(data) <= set(to_dict(SimConfig())):
        return
    raise OutputError(
        f"{path} exists and is not a simulator config (the one each run writes beside its outputs); move it away or "
        "choose another --out (nothing was written)"
    )


def simulate(
    cfg: SimConfig,
    out_dir: str | Path,
    *,
    dataset: bool = True,
    bag: bool = True,
    video: bool = False,
    posed_images: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir/sim_config.yaml`` and, as asked, ``out_dir/dataset`` (every route),
    ``out_dir/bags/<route>`` (``cfg.bag_routes``), ``out_dir/video/<route>.mp4`` + CSVs (``cfg.video_routes``)
    and ``out_dir/posed_images/<route>`` (``cfg.posed_routes``: transforms.json + images + 16-bit depth,
    :mod:`pose2rgbd.sim.export_posed`), all put in place together at the end
    (:class:`pose2rgbd.atomic.StagedOutputs`): the config always describes the outputs beside it.
    Returns ``{"config", "dataset", "bags": [...], "videos": [(mp4, gps_csv), ...], "posed_images": [...]}``.
    """

    out = Path(out_dir)
    targets: list[tuple[Path, Any]] = []
    if dataset:
        targets.append((out / "dataset", DATASET))
    if bag:
        targets += [(out / "bags" / r, BAG) for r in cfg.bag_routes]
    if video:
        for r in cfg.video_routes:
            targets += [(out / "video" / f"{r}.mp4", VIDEO), (out / "video" / f"{r}_gps.csv", FILE),
                        (out / "video" / f"{r}_poses.csv", FILE)]  # fmt: skip
    if posed_images:
        targets += [(out / "posed_images" / r, POSED_IMAGES) for r in cfg.posed_routes]
    for p, kind in targets:  # every refusal before any work
        check_output(p, kind, overwrite=overwrite)
        refuse_existing(p, overwrite=overwrite)
    _refuse_a_foreign_config(out / "sim_config.yaml")
    # the folders this run makes inside OUT (bags/, video/, posed_images/): removed again, if left empty, when it
    # fails (OUT itself stays, as after an interruption)
    made = sorted({p.parent for p, _ in targets if p.parent != out and not p.parent.exists()}, reverse=True)
    out.mkdir(parents=True, exist_ok=True)
    world = ex.world_of(cfg)
    cfg_path = out / "sim_config.yaml"
    result: dict[str, Any] = {"config": cfg_path, "dataset": None, "bags": [], "videos": [], "posed_images": []}
    # Everything is written beside its target first and put in place together with sim_config.yaml at the end:
    # an interruption or a full disk leaves the earlier outputs and the config that describes them as they were.
    staged = StagedOutputs()
    try:
        if dataset:
            ex.export_dataset(cfg, staged.stage(out / "dataset"), progress=progress, world=world)
            result["dataset"] = out / "dataset"
        if bag:
            for r in cfg.bag_routes:
                ex.export_bag(cfg, staged.stage(out / "bags" / r), r, progress=progress, world=world)
                result["bags"].append(out / "bags" / r)
        if video:
            for r in cfg.video_routes:
                mp4, gcsv = ex.export_video(
                    cfg, staged.stage_files(out / "video" / f"{r}.mp4"), r, progress=progress, world=world
                )
                result["videos"].append((out / "video" / mp4.name, out / "video" / gcsv.name))
        if posed_images:
            for r in cfg.posed_routes:
                export_posed_images(cfg, staged.stage(out / "posed_images" / r), r, progress=progress, world=world)
                result["posed_images"].append(out / "posed_images" / r)
        staged.commit({cfg_path: yaml.safe_dump(sim_config_dict(cfg), sort_keys=False)})
    except BaseException:
        staged.discard()
        for d in made:  # deepest first; a folder something else wrote into meanwhile stays
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return result

"""A place map built in pieces on a Dask cluster: ``pose2rgbd map build --dask SCHEDULER [--pieces N]``.

The selected keyframes are cut into N consecutive pieces; each piece is one Dask task that runs the ordinary
:func:`~pose2rgbd.placemap.build.build_map` on a worker (in that worker's process, ``workers: 1``: the cluster's worker
count is the parallelism) and writes a piece map; the pieces are then joined by
:func:`~pose2rgbd.placemap.merge.merge_maps` here. Dask distributed (the optional extra ``pose2rgbd[distributed]``)
schedules, retries and reports; nothing else is scheduled by hand. It is the same as building each piece with
``map build --selection.piece K/N`` on N machines and ``map merge`` -- without copying the pieces around.

What the cluster must give: **a shared file system** -- every worker reads the dataset and writes its piece at the
same absolute paths as this machine (the pieces go to a hidden folder beside ``--out``, removed when the merged map
is written), and pose2rgbd installed on every worker.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import make_temp_dir
from pose2rgbd.errors import ConfigError, Pose2RGBDError
from pose2rgbd.placemap.build import CalibrateStep, MapBuildConfig, build_map
from pose2rgbd.placemap.format import PLACE_MAP, MapError
from pose2rgbd.placemap.merge import merge_maps
from pose2rgbd.placemap.selection import select_frames
from pose2rgbd.progress import bar

INSTALL = "pip install 'pose2rgbd[distributed]' (Dask distributed)"


def _build_piece(dataset: str, out: str, cfg: MapBuildConfig, rows: np.ndarray) -> str:
    """One Dask task: the piece map of ``rows`` (runs on a worker)."""
    build_map(dataset, out, cfg, rows=rows, progress=False)
    return out


def build_in_pieces(
    dataset: str | Path,
    out: str | Path,
    cfg: MapBuildConfig | None = None,
    *,
    scheduler: Any,
    pieces: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    calibrate: CalibrateStep | None = None,
) -> dict[str, Any]:
    """Build the map of ``dataset`` into ``out`` as ``pieces`` Dask tasks (0: one per worker thread of the cluster)
    and merge them; ``scheduler``: the scheduler's address (``tcp://host:8786``) or a ``distributed.Client``;
    ``calibrate``: the merged map's self-calibration (:func:`pose2rgbd.placemap.merge.merge_maps`). Returns the merged
    map's manifest."""
    try:
        from distributed import Client, as_completed
    except ImportError as e:
        raise ConfigError(f"building on a Dask cluster needs Dask distributed: {INSTALL}") from e
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.output_guard import check_output, refuse_existing

    cfg = cfg or MapBuildConfig()
    check_output(out, PLACE_MAP, inputs=[dataset], overwrite=overwrite)
    refuse_existing(out, overwrite=overwrite)
    if cfg.selection.piece:
        raise ConfigError("selection.piece and --dask: the cluster builds every piece; leave selection.piece empty")
    rows = select_frames(Dataset(dataset), cfg.selection)
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler) if own else scheduler
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r}: {e}") from e
    try:
        n = pieces or max(2, sum(client.nthreads().values()))
        if n < 2 or len(rows) < 2 * n:
            raise ConfigError(
                f"{len(rows)} keyframes in {n} pieces: building in pieces needs at least 2 pieces of at least 2 "
                "keyframes; build without --dask"
            )
        parts = np.array_split(rows, n)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        stage = make_temp_dir(out, "tmp")
        try:
            piece_cfg = dataclasses.replace(cfg, workers=1)  # the cluster's workers are the parallelism
            src = str(Path(dataset).resolve())
            futures = {
                client.submit(_build_piece, src, str(stage / f"piece-{k:04d}"), piece_cfg, part, pure=False): k
                for k, part in enumerate(parts)
            }
            with bar(total=n, progress=progress, desc="map pieces (Dask)", unit="piece") as pbar:
                for f in as_completed(futures):
                    try:
                        f.result()
                    except Exception as e:
                        where = f"piece {futures[f] + 1} of {n} on a Dask worker"
                        if "deserializ" in str(e):  # the worker could not unpickle the task: another pose2rgbd
                            raise MapError(
                                f"{where} could not read its task ({e.__class__.__name__}): every worker needs the "
                                "same pose2rgbd and Python packages as this machine"
                            ) from e
                        if not isinstance(e, (Pose2RGBDError, OSError)):  # the cluster's own (a killed worker...)
                            raise MapError(f"{where} failed: {e.__class__.__name__}: {e}") from e
                        hint = (
                            "; every worker must see the dataset and the folder of --out at the same paths as this "
                            "machine (a shared file system)"
                            if isinstance(e, FileNotFoundError) or "not found" in str(e)
                            else ""
                        )
                        raise MapError(f"{where}: {e}{hint}") from e
                    pbar.update(1)
            from pose2rgbd import config as cfgmod

            selection = {**cfgmod.to_dict(cfg.selection), "description": cfg.selection.describe()}
            selection["description"] += f" (built in {n} pieces on a Dask cluster)"
            paths = [stage / f"piece-{k:04d}" for k in range(n)]
            return merge_maps(paths, out, overwrite=overwrite, progress=progress, global_cfg=cfg.global_desc,
                              seed=cfg.seed, selection=selection, calibrate=calibrate,
                              calibration=cfg.calibration)  # fmt: skip
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        if own:
            client.close()

"""The way one image takes through the code in ``pose2rgbd localize images --map`` (not a test, not a timing).

    .venv/bin/python bench/trace_localize_images.py --work /tmp/trace        # builds a small simulated map first
    .venv/bin/python bench/trace_localize_images.py --map M --dir IMAGES      # an existing map and image folder

The command runs in this process under :func:`sys.setprofile`. Every Python call and return event moves "where the
code is" to the innermost frame of a ``pose2rgbd`` module (frames of NumPy, OpenCV, pycolmap, the standard library
are transparent: their work counts for the pose2rgbd module that called them). The trace is the sequence of those
places with consecutive repeats collapsed, at two grains:

* **module**: the Python module (``pose2rgbd.inference.structure``);
* **room**: its package (``pose2rgbd.inference``, ``pose2rgbd.placemap.fused``; a top-level module such as
  ``pose2rgbd.progress`` is a room of its own), the rooms of docs/architecture.md.

One image's trace is the piece between two calls of the image reader (any function named ``read_rgb_image``,
wherever it lives), taken for an image in the middle of the folder: a cycle of the per-image loop. It is counted as
**stops** (entries into a place: the number of changes along the piece), **places** (distinct ones) and **returns**
(stops into a place already visited in the piece: stops - places). The issue's wording, "32 stops in 15 rooms with
17 returns", is the room grain. The **way** is the same piece with repeated excursions merged: a stretch that
repeats at once is kept once (``A B A B A``, a loop calling into ``B`` once per keyframe, counts as ``A B A``) --
the route, not how often a loop goes round it. ``--show`` prints the sequences.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_common import Tracer, print_trace  # noqa: E402

READER = "read_rgb_image"


def build_world(work: Path, n_images: int) -> tuple[Path, Path]:
    """A simulated survey at 128x128, its map, and ``n_images`` frames of the held-out crossing as PNG files."""
    import cv2

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, build_map
    from pose2rgbd.sim import SimConfig
    from pose2rgbd.sim.export import export_dataset, world_of

    ds_path, map_path, img_dir = work / "dataset", work / "map", work / "images"
    if not map_path.exists():
        sim = SimConfig(width=128, height=128, routes=["survey", "crossing"], survey_duration_s=360.0,
                        route_duration_s=60.0, dataset_stride=30)  # fmt: skip
        export_dataset(sim, ds_path, progress=False, world=world_of(sim))
        build_map(ds_path, map_path, MapBuildConfig(selection=MapSelection(sources=[0])), progress=False)
    if not img_dir.exists():
        img_dir.mkdir(parents=True)
        ds = Dataset(ds_path)
        for k, i in enumerate(ds.frames.source_id.nonzero()[0][:n_images]):
            cv2.imwrite(str(img_dir / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    return map_path, img_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--map", type=Path, default=None, help="a place map (default: build one under --work)")
    ap.add_argument("--dir", type=Path, default=None, help="a folder of images localized against --map")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pose2rgbd-trace"), help="where the simulated map goes")
    ap.add_argument("--images", type=int, default=5, help="simulated query images")
    ap.add_argument("--show", action="store_true", help="print the room sequence of the image")
    args = ap.parse_args()
    if (args.map is None) != (args.dir is None):
        ap.error("give both --map and --dir, or neither")
    m, d = (args.map, args.dir) if args.map is not None else build_world(args.work, args.images)
    out = args.work / "poses.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    from pose2rgbd.cli.main import main as cli

    argv = ["localize", "images", str(d), "--map", str(m), "--out", str(out), "--no-progress", "--overwrite"]
    cli(list(argv))  # warm: imports and first-use caches do not count
    tracer = Tracer(READER)
    sys.setprofile(tracer)
    try:
        rc = cli(list(argv))
    finally:
        sys.setprofile(None)
    if len(tracer.marks) < 3:
        print(f"need at least 3 images, the reader was called {len(tracer.marks)} times", file=sys.stderr)
        return 1
    k = len(tracer.marks) // 2
    piece = tracer.seq[tracer.marks[k - 1] : tracer.marks[k]]
    print(f"command: pose2rgbd {shlex.join(argv)}  (exit {rc}; image {k} of {len(tracer.marks)})")
    print_trace(piece, "one image", show=args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())

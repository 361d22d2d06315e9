"""The cost of the place map's file digests and the checkpoint's content digest (not a test).

    .venv/bin/python bench/bench_map_verify.py --map M [--checkpoint C.pt] [--repeat 3]

For the map ``M``: its size, what the writer spends computing the SHA-256 table (``file_table``, as
``MapWriter.close`` does), opening it with the size check only (``PlaceMap(M)``, every load) and with every
digest compared (``PlaceMap(M, verify=True)``: ``map info --verify`` and the end of ``map build``); the map's own
``build_s`` for scale. For a checkpoint: the size and the time of ``content_digest`` over its loaded content
(done once at save and once at every load). Times are the best of ``--repeat`` runs with the files in the page
cache (a map just written, or read again); the first read of a map from a cold disk adds the disk's read time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--map", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    from pose2rgbd.experiments.machine import cpu_line
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.digests import file_table
    from pose2rgbd.placemap.format import MANIFEST, read_manifest

    print(f"CPU: {cpu_line()}")
    m = read_manifest(a.map)
    size = sum(p.stat().st_size for p in a.map.iterdir())
    n = int(m.get("keyframes", 0))
    table = best(lambda: file_table(a.map, exclude=MANIFEST), a.repeat)
    open_sizes = best(lambda: PlaceMap(a.map), a.repeat)
    open_verify = best(lambda: PlaceMap(a.map, verify=True), a.repeat)
    print(f"map {a.map}: {n} keyframes, {len(m['files'])} files, {size / 1e6:.1f} MB, built in {m.get('build_s')} s")
    print(f"  SHA-256 table (the writer):          {table * 1e3:8.1f} ms  ({size / 1e6 / table:.0f} MB/s)")
    print(f"  open, sizes checked (every load):    {open_sizes * 1e3:8.1f} ms")
    print(f"  open, digests compared (--verify):   {open_verify * 1e3:8.1f} ms")
    if a.checkpoint is not None:
        import torch

        from pose2rgbd.models.checkpoint import content_digest

        data = torch.load(a.checkpoint, weights_only=True, map_location="cpu")
        t = best(lambda: content_digest(data), a.repeat)
        load = best(lambda: torch.load(a.checkpoint, weights_only=True, map_location="cpu"), a.repeat)
        mb = a.checkpoint.stat().st_size / 1e6
        print(f"checkpoint {a.checkpoint}: {mb:.1f} MB")
        print(f"  content digest: {t * 1e3:.1f} ms  (torch.load alone: {load * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()

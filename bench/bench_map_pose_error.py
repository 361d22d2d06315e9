"""Does a fix's published covariance cover its error against the TRUE pose on a map of GPS poses? (not a test)

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_map_pose_error.py --work W [--seeds 0 1 2] [--tau 30]

Per seed: the simulator's survey bag (GPS noise 0.3 m horizontally, 0.5 m vertically per fix, which its NavSatFix
covariance states; white, or with ``--tau`` a first-order Gauss-Markov error of that correlation time, as a real
receiver's drifts), `convert bag` (the dataset's poses are the GPS fixes; its manifest's ``pose_error`` the
receiver's statement), `map build --split route`, then `localize bag` of the same bag twice: with the map's pose error
added to every fix's covariance (``structure.map_pose_error``, the default) and without it. Each unflagged
``/pose2rgbd/pose`` is compared with ``/ground_truth/pose`` at its stamp: per world axis the share of fixes whose
error lies within one published standard deviation (68.3 % is calibrated), the median error and the median sigma.
Resumable: a seed's finished steps are kept in W and not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXE = [sys.executable, "-m", "pose2rgbd.cli.main"]


def _run(args: list[str], done: Path, log: Path) -> None:
    if done.exists():
        return
    with open(log, "w") as f:
        subprocess.run([*EXE, *args], check=True, stdout=f, stderr=subprocess.STDOUT)


def _poses(bag: Path, topic: str) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """stamp (ns) -> (position (3,), position covariance (3, 3) or None) of ``topic``'s messages."""
    from pose2rgbd.bags import open_bag
    from pose2rgbd.messages import stamp_to_ns

    out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    with open_bag(bag) as r:
        for m in r.messages([topic]):
            msg = m.msg
            pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
            p = np.array([pose.position.x, pose.position.y, pose.position.z])
            cov = (
                np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)[:3, :3]
                if hasattr(msg.pose, "covariance")
                else None
            )
            out[stamp_to_ns(msg.header.stamp)] = (p, cov)
    return out


def _flags(bag: Path) -> list[bool]:
    from pose2rgbd.bags import open_bag

    with open_bag(bag) as r:
        return [bool(m.msg.data) for m in r.messages(["/pose2rgbd/out_of_distribution"])]


def _score(loc: Path, truth: dict[int, tuple[np.ndarray, np.ndarray | None]]) -> dict[str, object]:
    fixes = _poses(loc, "/pose2rgbd/pose")
    flags = _flags(loc)
    stamps = [s for s, f in zip(fixes, flags, strict=True) if not f and s in truth]
    err = np.array([fixes[s][0] - truth[s][0] for s in stamps])
    sig = np.sqrt(np.array([np.diag(fixes[s][1]) for s in stamps]))  # type: ignore[arg-type]
    within = (np.abs(err) <= sig).mean(axis=0)
    return {
        "fixes": len(stamps),
        "within_1sigma_xyz": [round(float(v) * 100, 1) for v in within],
        "median_abs_error_xyz_m": [round(float(v), 3) for v in np.median(np.abs(err), axis=0)],
        "median_sigma_xyz_m": [round(float(v), 3) for v in np.median(sig, axis=0)],
    }


def main() -> int:
    from pose2rgbd.experiments.machine import cpu_line

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--tau", type=float, default=0.0, help="the GPS noise's correlation time, s (0: white)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_line()}")
    rows = []
    for seed in a.seeds:
        w = a.work / f"seed{seed}"
        w.mkdir(exist_ok=True)
        bag = w / "sim" / "bags" / "survey"
        _run(["sim", "--out", str(w / "sim"), "--no-dataset", "--bag", "--size", "128", "--duration", str(a.duration),
              "--set", f"seed={seed}", "--set", f"gps_noise_tau_s={a.tau}", "--no-progress"], bag,
             w / "sim.log")  # fmt: skip
        _run(["convert", "bag", str(bag), "--out", str(w / "dataset"), "--no-progress"], w / "dataset", w / "conv.log")
        _run(["map", "build", "--dataset", str(w / "dataset"), "--out", str(w / "map"), "--split", "route",
              "--no-progress"], w / "map", w / "map.log")  # fmt: skip
        for on in (True, False):
            out = w / f"loc_{'with' if on else 'without'}"
            _run(["localize", "bag", str(bag), "--map", str(w / "map"), "--out", str(out), "--no-progress",
                  "--structure.map_pose_error", str(on).lower()], out, w / f"{out.name}.log")  # fmt: skip
        stated = json.loads((w / "map" / "map.json").read_text())["dataset"].get("pose_error")
        truth = _poses(bag, "/ground_truth/pose")
        for on in (True, False):
            s = _score(w / f"loc_{'with' if on else 'without'}", truth)
            rows.append({"seed": seed, "tau_s": a.tau, "map_pose_error": on, "stated": stated, **s})
            print(json.dumps(rows[-1]))
    (a.work / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

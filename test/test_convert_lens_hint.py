"""`convert video` with the lens assumed (no --lens): the log and the assumptions name `--lens fisheye`; a lens the
user chose (--lens pinhole) gets no such hint."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.dataset import Dataset

HINT = "--lens fisheye calibrates it from the video and may fit better"


def _clip(folder: Path, n: int = 12, rate: float = 10.0) -> tuple[Path, Path]:
    video = folder / "walk.mp4"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), rate, (64, 48))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 96, 3), dtype=np.uint8)
    rows = ["time_s,lat,lon,alt,speed_mps,fix"]
    for k in range(n):
        wr.write(np.ascontiguousarray(base[:, 2 * k : 2 * k + 64]))
        rows.append(f"{k / rate:.3f},{44.43 + k * 1e-6:.9f},26.100000000,80.0,1.5,1")
    wr.release()
    gps = folder / "gps.csv"
    gps.write_text("\n".join(rows) + "\n")
    return video, gps


@pytest.mark.parametrize("lens_flag", [[], ["--lens", "pinhole"]], ids=["assumed", "given"])
def test_an_assumed_lens_points_to_the_fisheye_calibration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lens_flag: list[str]
) -> None:
    video, gps = _clip(tmp_path)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="pose2rgbd.convert.sources.video"):
        rc = main(["convert", "video", str(video), "--gps", str(gps), "--out", str(out), "--no-progress",
                   "--set", "estimate_offset=false", *lens_flag])  # fmt: skip
    assert rc == 0
    said = Dataset(out).manifest.extra["conversion"]["assumptions"]
    camera = [a for a in said if a.startswith("pinhole camera with an assumed horizontal FOV of 118.0 deg")]
    assert len(camera) == 1, said
    if lens_flag:  # the user chose the pinhole: no hint, in the assumptions or the log
        assert HINT not in camera[0] and HINT not in caplog.text
    else:  # assumed: the assumption and a log line say which flag may fit better
        assert camera[0].endswith(f"a wide action-camera lens (a GoPro's) is a fisheye: {HINT} (docs/convert.md, "
                                  "\"A video's lens\")"), camera[0]  # fmt: skip
        assert "lens: pinhole camera with an assumed horizontal FOV of 118.0 deg" in caplog.text
        assert HINT in caplog.text

"""`sync.flow.statistic: derotated` on a video: the intrinsics come from --hfov and the frame size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose2rgbd.cli.main import main


def test_derotated_on_a_simulated_video_with_hfov(tmp_path: Path) -> None:
    from pose2rgbd.config import from_dict
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import load_video_streams
    from pose2rgbd.sim import SimConfig, export_video, make_world

    cfg = SimConfig(seed=1, width=96, height=72, frames=45)
    mp4, gps = export_video(cfg, tmp_path / "v", "survey", progress=False, world=make_world(seed=1, size_m=200))
    conv = from_dict(ConvertConfig, {"hfov_deg": 90.0, "sync": {"flow": {"statistic": "derotated", "width": 96}}})
    s = load_video_streams(mp4, gps, conv, progress=False)
    assert s.camera.width == 96 and abs(s.camera.fx - 48.0) < 1e-6  # fx = w / 2 / tan(hfov / 2)
    assert np.isfinite(s.flow[3:]).mean() > 0.9 and np.nanmedian(s.flow) >= 0
    out = tmp_path / "ds"
    rc = main(["convert", "video", str(mp4), "--gps", str(gps), "--out", str(out), "--hfov", "90",
               "--sync.flow.statistic", "derotated", "--no-estimate", "--no-progress"])  # fmt: skip
    assert rc == 0 and (out / "manifest.yaml").is_file()

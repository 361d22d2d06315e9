"""The engine on real checkpoints (models package): load, validate, render; bad checkpoints fail at start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.errors import CheckpointError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.inference import EngineConfig, RenderEngine, load_engine
from pose2rgbd.testing.ground_plane import look_down_pose

torch = pytest.importorskip("torch")


def _save(path: Path, preset: str = "slice10", size: int = 64, fingerprint: str = "fp-abc") -> Path:
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint

    torch.manual_seed(0)
    mc = preset_config(preset, size=size, outputs="rgbd", encoding="6dof-quat")
    T = np.stack([look_down_pose(x, y, 20.0) for x in (-50, 50) for y in (-50, 50)])
    model = build_model(mc, DepthNormalizer(1.0, 80.0), PoseNormalizer.fit(T, "6dof-quat"))
    return save_checkpoint(
        path,
        model,
        dataset_fingerprint=fingerprint,
        camera=PinholeCamera.from_fov(256, 256, 75.0),
        depth_kind="metric",
    )


def test_engine_on_a_saved_checkpoint(tmp_path: Path) -> None:
    ck = _save(tmp_path / "m.pt")
    eng = load_engine(
        EngineConfig(
            checkpoint=str(ck),
            warmup=1,
            device="cpu",
            expect_size=64,
            expect_preset="slice10",
            expect_fingerprint="fp-abc",
        )
    )
    res = eng.render(np.stack([look_down_pose(0, 0, 20), look_down_pose(10, 5, 20)]))
    assert res.rgb is not None and res.rgb.shape == (2, 64, 64, 3) and res.rgb.dtype == np.uint8
    assert res.depth is not None and res.depth.dtype == np.float32
    assert np.nanmin(res.depth) >= 1.0 - 1e-4 and np.nanmax(res.depth) <= 80.0 + 1e-3  # metres, denormalized
    assert res.confidence is not None and res.confidence.shape == (2, 64, 64)  # slice models give confidence
    assert isinstance(eng, RenderEngine) and eng.camera.width == 64 and eng.world_frame == "map"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        ("missing", "not found"),
        ("corrupt", "cannot read checkpoint"),
        ("size", "size"),
        ("fingerprint", "fingerprint"),
        ("preset", "preset"),
    ],
)
def test_bad_checkpoints_fail_at_start(tmp_path: Path, mutate: str, match: str) -> None:
    ck = tmp_path / "m.pt"
    cfg = EngineConfig(checkpoint=str(ck), warmup=0, device="cpu")
    if mutate != "missing":
        _save(ck)
    if mutate == "corrupt":
        ck.write_bytes(ck.read_bytes()[:1000])
    elif mutate == "size":
        cfg.expect_size = 128
    elif mutate == "fingerprint":
        cfg.expect_fingerprint = "another-dataset"
    elif mutate == "preset":
        cfg.expect_preset = "base"
    with pytest.raises(CheckpointError, match=match):
        RenderEngine.from_config(cfg)


def test_cli_trajectory_to_pngs_and_video(tmp_path: Path) -> None:
    from pose2rgbd.cli.main import main

    ck = _save(tmp_path / "m.pt", preset="base")
    csv = tmp_path / "traj.csv"
    rows = ["frame,time_s,tx,ty,tz,qx,qy,qz,qw"]
    for i in range(5):
        rows.append(f"{i},{i * 0.1},{i},0,20,1,0,0,0")  # looking down (180 deg about x)
    csv.write_text("\n".join(rows) + "\n")
    args = ["render", "trajectory", "--checkpoint", str(ck), "--trajectory", str(csv)]
    assert main([*args, "--out", str(tmp_path / "pngs")]) == 0
    assert len(list((tmp_path / "pngs").glob("rgb_*.png"))) == 5
    depth = np.load(tmp_path / "pngs" / "depth_000004.npy")
    assert depth.shape == (64, 64) and np.isfinite(depth).all()
    assert main([*args, "--out", str(tmp_path / "v.mp4")]) == 0
    assert (tmp_path / "v.mp4").stat().st_size > 0
    csv.write_text("frame,time_s,tx\n0,0,1\n")
    assert main([*args, "--out", str(tmp_path / "x")]) == 2  # clear error, no traceback


def test_a_saved_ground_plane_checkpoint_loads_in_a_process_that_never_imported_its_module(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pose2rgbd.models import save_checkpoint
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    ck = make_ground_plane_checkpoint(16)
    p = save_checkpoint(tmp_path / "gp.pt", ck.model, dataset_fingerprint="stub", camera=ck.camera)
    code = (
        "import sys; from pose2rgbd.models import load_checkpoint; "
        f"ck = load_checkpoint({str(p)!r}); "
        "assert 'pose2rgbd.testing.ground_plane' in sys.modules; print(ck.kind, type(ck.model).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ground-plane", "GroundPlaneModel"]

"""A checkpoint damaged after it was written -- truncated, or a byte changed -- is a CheckpointDamagedError naming
the file, at load and at the CLI; torch alone loads a changed weight byte silently. Files written before the
content digest was recorded load as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pose2rgbd.cli.main import main
from pose2rgbd.errors import DamagedFileError
from pose2rgbd.models import load_checkpoint
from pose2rgbd.models.checkpoint import DIGEST_KEY, CheckpointDamagedError, content_digest


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    torch.manual_seed(0)
    model = build_model(
        preset_config("base", size=64, outputs="rgbd"),
        DepthNormalizer(1.0, 200.0),
        PoseNormalizer("6dof-quat", [-50.0] * 3 + [-1.0] * 4, [50.0] * 3 + [1.0] * 4),
    )
    cam = make_ground_plane_checkpoint(64).camera
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", model, dataset_fingerprint="abc", camera=cam)


def _damaged(saved: Path, tmp_path: Path, how: str, at: float) -> Path:
    data = bytearray(saved.read_bytes())
    if how == "truncate":
        data = data[: int(len(data) * at)]
    else:
        data[int(len(data) * at)] ^= 0x10
    out = tmp_path / "damaged.pt"
    out.write_bytes(bytes(data))
    return out


def test_the_digest_is_recorded_and_matches(saved: Path) -> None:
    raw = torch.load(saved, weights_only=True)
    assert raw[DIGEST_KEY] == content_digest(raw) and len(raw[DIGEST_KEY]) == 64
    load_checkpoint(saved)


@pytest.mark.parametrize(
    ("how", "at"),
    [("truncate", 0.0), ("truncate", 0.05), ("truncate", 0.5), ("truncate", 0.999), ("flip", 0.3), ("flip", 0.7)],
)
def test_damaged_checkpoint_is_named_at_load_and_at_the_cli(
    how: str, at: float, saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _damaged(saved, tmp_path, how, at)
    with pytest.raises(CheckpointDamagedError, match=r"damaged|empty") as e:
        load_checkpoint(bad)
    assert isinstance(e.value, DamagedFileError) and e.value.path == bad and str(bad) in str(e.value)
    assert "pose2rgbd train" in str(e.value)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and str(bad) in err
    assert not (tmp_path / "m.onnx").exists()


def test_a_damaged_bundle_names_export_bundle_as_the_way_back(saved: Path, tmp_path: Path) -> None:
    """A bundle (its keyframes inside) whose content no longer matches its digest: besides an intact copy, the way
    back is to bundle its run's checkpoint again, not to train again; a plain checkpoint's message does not say so."""
    raw = torch.load(saved, weights_only=True)
    raw["extra"] = {**raw["extra"], "keyframes": {"rgb": torch.zeros(1)}}  # changed after the digest was recorded
    torch.save(raw, tmp_path / "bundle.pt")
    with pytest.raises(CheckpointDamagedError, match=r"damaged checkpoint.*`export --bundle` it again"):
        load_checkpoint(tmp_path / "bundle.pt")
    with pytest.raises(CheckpointDamagedError) as e:
        load_checkpoint(_damaged(saved, tmp_path, "flip", 0.7))
    assert "export --bundle" not in str(e.value)


def test_checkpoint_written_without_a_digest_still_loads(saved: Path, tmp_path: Path) -> None:
    raw = torch.load(saved, weights_only=True)
    del raw[DIGEST_KEY]
    torch.save(raw, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    ref = load_checkpoint(saved)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])

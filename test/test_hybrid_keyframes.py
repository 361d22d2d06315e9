"""A hybrid checkpoint names its keyframes' place map: training writes the training split's keyframes as a map in
the run folder (or takes a map of training frames only), the checkpoint carries no keyframes but the map's path
and digest, checked on load; `pose2rgbd export --bundle` packs them into one file that renders the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd.cli.main import main
from pose2rgbd.errors import CheckpointError
from pose2rgbd.experiments.toy import make_toy_dataset

SIZE = 64


def _train_args(toy: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--method", "hybrid", "--preset", "hybrid-lite", "--dataset", str(toy), "--out", str(out),
        "--cache-root", str(toy.parent / "cache"), "--set", "model.size=64", "--set", "train.split=random",
        "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "train.epochs=1",
        "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "train.tensorboard=false",
        "--set", "train.recalibrate_bn=false", "--set", "train.val_fraction=0.2", "--set", "train.test_fraction=0.2",
        "--set", "model.max_keyframes=12", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("hkf") / "ds", n_survey=30, n_route=8, size=SIZE)


@pytest.fixture(scope="module")
def run(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hkfrun") / "run"
    assert main(_train_args(toy, out)) == 0
    return out


def _raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _render(checkpoint: Path, poses: np.ndarray, map_path: str = "") -> object:
    from pose2rgbd.inference import load_engine
    from pose2rgbd.inference.common import EngineConfig

    cfg = EngineConfig(checkpoint=str(checkpoint), device="cpu", precision="fp32", warmup=0, map=map_path)
    return load_engine(cfg).render(poses)


def _queries(toy: Path) -> np.ndarray:
    from pose2rgbd.dataset import Dataset

    T = Dataset(toy).frames.T_world_cam
    return T[[1, 7, 33]]


def test_trained_checkpoint_has_no_embedded_store_and_names_its_map(run: Path) -> None:
    import json

    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.keyframe_map import has_local_features, keyframes_digest

    raw = _raw(run / "last.pt")
    assert not [k for k in raw["state_dict"] if k.startswith("kf_") and k != "kf_K"]  # no keyframe buffers
    assert "keyframes" not in raw["extra"]
    ref = raw["extra"]["place_map"]
    pm = PlaceMap(run / "keyframes")
    assert ref["path"] == "keyframes" and ref["keyframes"] == len(pm) == 12
    assert ref["digest"] == keyframes_digest(pm.manifest) and ref["fingerprint"] == pm.fingerprint
    assert not has_local_features(pm.manifest)  # a keyframe map: no SIFT features
    split = json.loads((run / "split.json").read_text())
    assert set(pm.frames.tolist()) <= set(split["train"])
    ck = load_checkpoint(run / "last.pt")
    assert isinstance(ck.model.keyframes.keyframes, PlaceMap)
    assert ck.model.keyframes.keyframes.path == run / "keyframes"


def test_bundle_round_trip_renders_bit_identical_to_the_map_backed_checkpoint(
    run: Path, toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "elsewhere" / "bundle.pt"
    capsys.readouterr()
    assert main(["export", "--bundle", "--checkpoint", str(run / "last.pt"), "--out", str(bundle)]) == 0
    said = capsys.readouterr().out
    assert "+ the map" in said and ("carries no depth uncertainty" in said) == (
        "depth_uncertainty" not in _raw(run / "last.pt")["extra"]
    ), said
    raw = _raw(bundle)
    assert "place_map" not in raw["extra"] and raw["extra"]["keyframes"]["rgb"].shape == (12, SIZE, SIZE, 3)
    Q = _queries(toy)
    ref, got = _render(run / "last.pt", Q), _render(bundle, Q)
    np.testing.assert_array_equal(got.rgb, ref.rgb)
    np.testing.assert_array_equal(got.depth, ref.depth)
    np.testing.assert_array_equal(got.confidence, ref.confidence)
    # `map link` of the bundle back to the run's map: the same renders again, the keyframes not carried
    linked = tmp_path / "linked.pt"
    assert main(["map", "link", "--checkpoint", str(bundle), "--map", str(run / "keyframes"), "--out",
                 str(linked)]) == 0  # fmt: skip
    assert "keyframes" not in _raw(linked)["extra"]
    np.testing.assert_array_equal(_render(linked, Q).rgb, ref.rgb)
    # a training run's own checkpoint is not an earlier bundle: refused even with --overwrite, and kept
    other = tmp_path / "other_run"
    other.mkdir()
    for name in ("config.yaml", "log.csv"):
        (other / name).write_text("a run's\n")
    (other / "best.pt").write_bytes(b"a trained model")
    for cmd in (["export", "--bundle", "--checkpoint", str(run / "last.pt")],
                ["map", "link", "--checkpoint", str(bundle), "--map", str(run / "keyframes")]):  # fmt: skip
        capsys.readouterr()
        assert main([*cmd, "--out", str(other / "best.pt"), "--overwrite"]) == 2
        assert "is a checkpoint of the training run in" in capsys.readouterr().err
    assert (other / "best.pt").read_bytes() == b"a trained model"
    # an earlier bundle in a run's folder, under a name of its own, is replaced with --overwrite
    shutil.copy(bundle, other / "bundle.pt")
    assert main(["export", "--bundle", "--checkpoint", str(run / "last.pt"), "--out", str(other / "bundle.pt"),
                 "--overwrite"]) == 0  # fmt: skip
    # a checkpoint without a depth uncertainty (a mid-run one): the bundle says its renders will have no depth_sigma
    from pose2rgbd.models.checkpoint import load_checkpoint, save_loaded

    ck = load_checkpoint(run / "last.pt")
    bare = save_loaded(ck, run / "bare.pt", extra={k: v for k, v in ck.extra.items() if k != "depth_uncertainty"})
    capsys.readouterr()
    assert main(["export", "--bundle", "--checkpoint", str(bare), "--out", str(tmp_path / "bare_bundle.pt")]) == 0
    assert "carries no depth uncertainty" in capsys.readouterr().out
    bare.unlink()
    # a bundle bundled again names no map it came with
    capsys.readouterr()
    assert main(["export", "--bundle", "--checkpoint", str(bundle), "--out", str(tmp_path / "again.pt")]) == 0
    assert "+ the map" not in capsys.readouterr().out
    # a checkpoint of the user's outside any run (a copy of a trained model), or any other .pt: not a bundle, kept
    shutil.copy(run / "last.pt", tmp_path / "mycopy.pt")
    (tmp_path / "notes.pt").write_text("mine")
    for name in ("mycopy.pt", "notes.pt"):
        before = (tmp_path / name).read_bytes()
        capsys.readouterr()
        assert main(["export", "--bundle", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / name),
                     "--overwrite"]) == 2  # fmt: skip
        assert "is not a bundle of `export --bundle`" in capsys.readouterr().err
        assert (tmp_path / name).read_bytes() == before


def test_a_moved_missing_or_other_map_is_a_clear_error(run: Path, toy: Path, tmp_path: Path) -> None:
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.methods.hybrid.recipe import run_keyframe_map

    Q = _queries(toy)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(run / "last.pt", moved / "last.pt")
    with pytest.raises(CheckpointError, match=r"place map .*keyframes \(recorded as keyframes relative"):
        _render(moved / "last.pt", Q)
    # a map at the recorded place with other keyframes (another selection): the digests differ
    ds = Dataset(toy)
    cache = build_cache(ds, SIZE, cache_root=toy.parent / "cache", progress=False)
    run_keyframe_map(ds, cache, np.arange(0, 20, 2), moved / "keyframes", 10.0, False)
    with pytest.raises(CheckpointError, match=r"digest .* holds other keyframes"):
        _render(moved / "last.pt", Q)
    # moved together with its own map: it loads
    shutil.rmtree(moved / "keyframes")
    shutil.copytree(run / "keyframes", moved / "keyframes")
    _render(moved / "last.pt", Q)
    # a map of another dataset given instead
    other = make_toy_dataset(tmp_path / "other", n_survey=12, n_route=0, size=SIZE, seed=5)
    ods = Dataset(other)
    ocache = build_cache(ods, SIZE, cache_root=tmp_path / "ocache", progress=False)
    run_keyframe_map(ods, ocache, np.arange(6), tmp_path / "other_map", 10.0, False)
    with pytest.raises(CheckpointError, match="another dataset"):
        _render(run / "last.pt", Q, str(tmp_path / "other_map"))


def test_a_map_with_validation_or_test_frames_is_refused_for_training(
    run: Path, toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.methods.hybrid.recipe import run_keyframe_map

    ds = Dataset(toy)
    cache = build_cache(ds, SIZE, cache_root=toy.parent / "cache", progress=False)
    every = tmp_path / "every_frame"
    run_keyframe_map(ds, cache, np.arange(len(ds)), every, 10.0, False)
    capsys.readouterr()
    assert main(_train_args(toy, tmp_path / "r1", "--map", str(every))) != 0
    err = capsys.readouterr().err
    assert "are not training frames" in err and "validation and test frames" in err
    assert not (tmp_path / "r1" / "last.pt").exists()
    # the run's own keyframe map (training frames only) is accepted, and the checkpoint names it where it is
    assert main(_train_args(toy, tmp_path / "r2", "--map", str(run / "keyframes"))) == 0
    ref = _raw(tmp_path / "r2" / "last.pt")["extra"]["place_map"]
    assert (tmp_path / "r2" / ref["path"]).resolve() == (run / "keyframes").resolve()
    assert not (tmp_path / "r2" / "keyframes").exists()


def test_keyframes_of_another_camera_are_resampled_into_the_model_camera() -> None:
    """The keyframe view reads each keyframe's own intrinsics: the model's camera is used as is; a keyframe whose
    principal point lies 4 px further right is shifted 4 px into the model's camera (NaN depth where it saw
    nothing), not warped as if it were the model's camera."""
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.placemap.keyframe_view import SizedKeyframes
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    depth = rng.uniform(1, 9, (1, 16, 16)).astype(np.float32)
    model_cam = PinholeCamera(16, 16, 10.0, 10.0, 7.5, 7.5)
    kf_cam = PinholeCamera(16, 16, 10.0, 10.0, 11.5, 7.5)
    same = SizedKeyframes(ArrayKeyframes(rgb, depth, np.eye(4)[None], model_cam), model_cam)
    np.testing.assert_array_equal(same.get(0)[0], rgb[0])
    np.testing.assert_array_equal(same.get(0)[1], depth[0])
    got_rgb, got_depth = SizedKeyframes(ArrayKeyframes(rgb, depth, np.eye(4)[None], kf_cam), model_cam).get(0)
    np.testing.assert_array_equal(got_rgb[:, :12], rgb[0, :, 4:])
    np.testing.assert_array_equal(got_depth[:, :12], depth[0, :, 4:])
    assert np.isnan(got_depth[:, 12:]).all()

"""The hybrid renderer reading its keyframes from a place map: the same renders as the embedded store, a linked
checkpoint that names its map (fingerprint checked, clear errors), and keyframes decoded only when needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

S = 64


@pytest.fixture(scope="module")
def hybrid(map_world: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A hybrid at 64x64 whose store holds the survey frames of the map world (untrained decoder, random fill
    weights so the fill is not the identity), saved as a checkpoint, and a lossless (PNG) map of the same frames."""
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.methods.hybrid.recipe import fill_store
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.placemap import MapBuildConfig, build_map

    d = tmp_path_factory.mktemp("hybrid_map")
    ds = Dataset(map_world["dataset"])
    cache = build_cache(ds, S, cache_root=d / "cache", progress=False)
    survey = np.flatnonzero(cache.source_id == 0)
    fam = get_family("hybrid")
    mc = fam.make_config("hybrid", size=S, dense_channels=8, trunk_channels=[4] * 6, fill_channels=4, fill_levels=1)
    torch.manual_seed(0)
    model = fam.build(mc)
    model.set_pose_normalizer(PoseNormalizer.fit(cache.T_world_cam[survey], mc.encoding))
    model.set_depth_normalizer(DepthNormalizer(1.0, 400.0))
    keep = fill_store(model, cache, survey)
    with torch.no_grad():
        model.fill.out.weight.normal_(0.0, 0.01)
    ck = save_checkpoint(d / "hybrid.pt", model, dataset_fingerprint=ds.fingerprint(), camera=cache.camera)
    build_map(ds.path, d / "map", MapBuildConfig(image_codec="png"), rows=keep, progress=False)
    queries = ds.frames.T_world_cam[np.flatnonzero(ds.frames.source_id == 1)[::6]]
    return {"dir": d, "checkpoint": ck, "map": d / "map", "queries": queries, "dataset": ds.path}


def _render(checkpoint: Path, queries: np.ndarray, map_path: str = "") -> object:
    from pose2rgbd.inference import load_engine
    from pose2rgbd.inference.common import EngineConfig

    eng = load_engine(EngineConfig(checkpoint=str(checkpoint), device="cpu", precision="fp32", warmup=0, map=map_path))
    return eng, eng.render(queries)


def test_map_backed_hybrid_renders_what_the_embedded_store_renders(hybrid: dict) -> None:
    """engine.map: the same keyframes read lazily from the map give the embedded store's renders: the same
    neighbours, RGB within one grey level and depth within the float16 step the store keeps on all but a few
    pixels (where two keyframes' points meet at nearly equal depth and the 16-bit depth codes differ by a step,
    the z-buffer may keep the other one: 0.2 % of the pixels measured); only the keyframes the poses needed were
    decoded; the model holds no embedded keyframes any more."""
    eng0, ref = _render(hybrid["checkpoint"], hybrid["queries"])
    eng, got = _render(hybrid["checkpoint"], hybrid["queries"], str(hybrid["map"]))
    model = eng.loaded.model
    from pose2rgbd.placemap import PlaceMap

    assert isinstance(model.keyframes.keyframes, PlaceMap)
    rows_map, _ = model.select_keyframes(hybrid["queries"])
    rows_store, _ = eng0.loaded.model.select_keyframes(hybrid["queries"])
    assert np.array_equal(rows_map, rows_store)
    same = np.abs(got.rgb.astype(int) - ref.rgb.astype(int)).max(axis=-1) <= 1
    assert same.mean() > 0.99
    fin = np.isfinite(ref.depth) & np.isfinite(got.depth) & same
    assert np.mean(np.isfinite(ref.depth) == np.isfinite(got.depth)) > 0.99
    assert np.mean(np.abs(got.depth[fin] / ref.depth[fin] - 1) < 2e-3) > 0.99
    assert np.mean(got.confidence == ref.confidence) > 0.99
    stats = model.keyframes.cache_stats()
    assert 0 < stats["cached"] < model.n_keyframes  # decoded: the neighbours of the queries, not the whole map


def test_linked_checkpoint_names_its_map_and_refuses_a_missing_or_foreign_one(hybrid: dict, map_world: dict) -> None:
    """`pose2rgbd map link`: a checkpoint without the keyframes (smaller) naming its map relative to itself, which
    renders the same; moved with its map it still loads; without the map, or with a map of another dataset, the
    load fails naming the map and what to do."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.errors import CheckpointError

    d = hybrid["dir"]
    out = d / "lean" / "hybrid_lean.pt"
    assert main(["map", "link", "--checkpoint", str(hybrid["checkpoint"]), "--map", str(hybrid["map"]),
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.stat().st_size < 0.5 * hybrid["checkpoint"].stat().st_size
    _, ref = _render(hybrid["checkpoint"], hybrid["queries"], str(hybrid["map"]))
    _, got = _render(out, hybrid["queries"])
    np.testing.assert_array_equal(got.rgb, ref.rgb)  # the map the link names is the one given above
    moved = d / "deploy"
    (moved / "models").mkdir(parents=True)
    shutil.copy(out, moved / "models" / out.name)
    with pytest.raises(CheckpointError, match="place map"):
        _render(moved / "models" / out.name, hybrid["queries"])
    shutil.copytree(hybrid["map"], moved / "map")
    _render(moved / "models" / out.name, hybrid["queries"])  # the relative path holds after the move
    from pose2rgbd.placemap import build_map

    build_map(map_world["other"], d / "other_map", progress=False)  # another city
    with pytest.raises(CheckpointError, match="another dataset"):
        _render(out, hybrid["queries"], str(d / "other_map"))


def test_truncated_map_images_are_refused_when_the_engine_loads(hybrid: dict, tmp_path: Path) -> None:
    """A map whose images.bin was truncated: the engine refuses it at load naming the file and the command that
    rebuilds it (it used to load, and the first render that touched a lost keyframe failed inside cv2.imdecode)."""
    from pose2rgbd.placemap.verify import MapDamagedError

    m = tmp_path / "map"
    shutil.copytree(hybrid["map"], m)
    data = (m / "images.bin").read_bytes()
    (m / "images.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(MapDamagedError, match=r"images.bin is \d+ bytes.*pose2rgbd map build --dataset"):
        _render(hybrid["checkpoint"], hybrid["queries"], str(m))


def _edited_map(src: Path, dst: Path, dataset: dict) -> Path:
    """A copy of the map ``src`` whose manifest records ``dataset`` (map.json is not in its own file table)."""
    import json

    shutil.copytree(src, dst)
    m = json.loads((dst / "map.json").read_text())
    m["dataset"] = dataset
    (dst / "map.json").write_text(json.dumps(m))
    return dst


def test_map_link_refuses_a_merged_map_or_another_datasets_naming_the_map_to_give(
    hybrid: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`map link --map` with a map merged from several datasets said "built from another dataset (fingerprint
    merged-...)" and "give the map of its training dataset with engine.map (--map)", no flag of `map link`. It says
    a merged map cannot back a hybrid (trained on one dataset), and to build a map of the checkpoint's own training
    dataset -- named where the merged map lists it -- and give it to `map link` with --map."""
    import json

    from pose2rgbd.cli.main import main

    own = json.loads((hybrid["map"] / "map.json").read_text())["dataset"]
    other = {**own, "path": str(tmp_path / "elsewhere"), "name": "elsewhere", "fingerprint": "0123456789abcdef"}
    merged = {k: v for k, v in own.items() if k != "path"}
    merged.update(name="merged from 2 datasets", fingerprint="merged-aed13cbe699eb048", datasets=[own, other])
    m = _edited_map(hybrid["map"], tmp_path / "merged", merged)
    out = tmp_path / "linked.pt"
    rc = main(["map", "link", "--checkpoint", str(hybrid["checkpoint"]), "--map", str(m), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists(), err
    assert f"{m} is a map merged from 2 datasets ({own['path']}, {other['path']}; fingerprint merged-" in err, err
    assert "one of those merged" in err and "a merged map of several datasets cannot back it" in err, err
    assert f"`pose2rgbd map build --dataset {own['path']} --out MAP`" in err, err
    assert f"`pose2rgbd map link --checkpoint {hybrid['checkpoint']} --map MAP --out OUT.pt`" in err, err
    assert "engine.map (--map)" not in err
    # a map of another dataset: the same advice (the training dataset unknown here: named by its fingerprint)
    m = _edited_map(hybrid["map"], tmp_path / "other", other)
    rc = main(["map", "link", "--checkpoint", str(hybrid["checkpoint"]), "--map", str(m), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists(), err
    assert f"{m} was built from another dataset (fingerprint 0123456789abcdef, {other['path']})" in err, err
    assert "`pose2rgbd map build --dataset DATASET --out MAP` (DATASET: the one of fingerprint " in err, err
    assert "--map MAP --out OUT.pt" in err and "engine.map (--map)" not in err, err

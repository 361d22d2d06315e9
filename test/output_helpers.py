"""Shared by the output-safety tests (test_faults_outputs.py, test_output_guard_subfolders.py,
test_run_folder_own_files.py, test_faults_swap.py): a tree's hashes, the CLI run as a user runs it, a small dataset,
and an earlier training run's files as a run writes them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from pose2rgbd.cli.main import main

LOG_HEADER = "wall_s,step,epoch,phase,name,value"  # the trainer's log.csv header (training.callbacks.LOG_COLUMNS)


def tree_hash(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``path`` (or of ``path`` itself), plus the folders."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    """``pose2rgbd ARGV`` in process: its exit code and what it printed (stdout, then stderr)."""
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def make_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16x16 toy dataset of 16 frames (a module's ``toy_dataset`` fixture)."""
    from pose2rgbd.experiments.toy import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", n_survey=12, n_route=4, size=16)


def fake_run_files(path: Path, names: tuple[str, ...] = ("config.yaml", "split.json", "last.pt", "best.pt",
                                                         "log.csv")) -> Path:  # fmt: skip
    """An earlier training run's files as a run writes them (what :func:`pose2rgbd.training.run_folder.not_the_runs`
    recognises), each with content of its own so that a test can see it was kept byte for byte: a config.yaml with
    the run's sections, a split.json of the run's shape, a log.csv with the trainer's header, checkpoints that are
    pose2rgbd's (a torch archive saying ``format: pose2rgbd-checkpoint``)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        p = path / name
        if name == "config.yaml":
            p.write_text(yaml.safe_dump({"method": "pose2rgbd", "model": {"size": 64}, "train": {"epochs": 1},
                                         "dataset": "/earlier/dataset", "dataset_fingerprint": "0123abcd",
                                         "split": "earlier run's split"}, sort_keys=False))  # fmt: skip
        elif name == "split.json":
            p.write_text(json.dumps({"kind": "random", "description": "earlier run's split", "train": [0, 1],
                                     "val": [2], "test": [2], "separate_test": False}))  # fmt: skip
        elif name == "log.csv":
            p.write_text(f"{LOG_HEADER}\n0.10,1,0,train,loss,0.5\n")
        elif name.endswith(".pt"):
            import torch

            torch.save({"format": "pose2rgbd-checkpoint", "version": 2, "note": f"earlier run's {name}"}, p)
        elif name == "tb":
            p.mkdir()
            (p / "events.out.tfevents.1.host.1.0").write_bytes(b"earlier run's events")
        elif name == "keyframes":
            p.mkdir()
            (p / "map.json").write_text(json.dumps({"format": "pose2rgbd-map", "version": 1}))
    return path

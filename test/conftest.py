"""Shared fixtures. Real data is read from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POSE2RGBD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; tests that need it fail loudly if it is missing (CI provides it)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set POSE2RGBD_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _no_held_signal_left() -> Iterator[None]:
    """After every test: no ``signals_held`` block left running and no held signal left undelivered. One left
    behind (a thread of the test still in a swap, a block never closed) keeps every later Ctrl-C of this pytest
    worker from being delivered, which fails whichever test of the worker sends one next; here the test that left it
    errors at its teardown, naming the thread. A thread of the test still finishing its swap gets 30 s."""
    yield
    signals = sys.modules.get("pose2rgbd.atomic.signals")
    if signals is None:
        return
    deadline = time.monotonic() + 30.0
    while signals.holders() and time.monotonic() < deadline:
        time.sleep(0.05)
    left, undelivered = signals.holders(), list(signals._pending)
    if left or undelivered:
        signals._active.clear()
        signals._pending.clear()
        pytest.fail(f"the test left {left or 'no held block'} and held signals {undelivered} undelivered")


@pytest.fixture(autouse=True, scope="session")
def _test_workers_are_not_serving_processes() -> Iterator[None]:
    """An engine built by a test would set this worker up as a serving process (``engine.keep_freed_memory``,
    ``engine.freeze_gc``: process-wide and for good), after which the worker keeps the largest working set of every
    later test and never collects the cycles of objects alive then. The settings themselves are tested in child
    processes (test_serving_process.py) and run in the live nodes' processes."""
    from pose2rgbd.inference import serving_process

    mp = pytest.MonkeyPatch()
    mp.setattr(serving_process, "_apply_heap", lambda: False)
    mp.setattr(serving_process, "freeze_gc", lambda: 0)
    yield
    mp.undo()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_rclpy = _has("rclpy")
    if not has_rclpy and os.environ.get("POSE2RGBD_REQUIRE_ROS") == "1":
        raise pytest.UsageError(
            "POSE2RGBD_REQUIRE_ROS=1 but rclpy is not installed (bash scripts/setup.sh installs it)"
        )
    cuda = False
    if any(it.get_closest_marker("gpu") for it in items):
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
    for it in items:
        # markers, not keywords: a checkout under a folder named "ros" or "gpu" must not skip every test
        if it.get_closest_marker("ros") and not has_rclpy:
            it.add_marker(pytest.mark.skip(reason="rclpy not installed (ROS 2 Humble/Jazzy needed)"))
        if it.get_closest_marker("gpu") and not cuda:
            it.add_marker(pytest.mark.skip(reason="no CUDA device"))


@pytest.fixture
def ros_domain_id() -> int:
    """A random ROS 2 domain in this pytest worker's own range (gw0: 1-50, gw1: 51-100; 1-100 without xdist),
    so DDS tests of two files running at once never share a domain."""
    import random

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    k = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    return random.randint(1, 100) if k < 0 else 1 + 50 * (k % 2) + random.randrange(50)


MAP_WORLD_SIZE = 128


@pytest.fixture(scope="session")
def map_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A simulated survey (the map) and a held-out crossing route (the queries) at 128x128, plus the crossing of
    another city (seed 1) as queries from a place the map has never seen."""
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, build_map
    from pose2rgbd.sim import SimConfig
    from pose2rgbd.sim.export import export_dataset, world_of

    d = tmp_path_factory.mktemp("map")
    sim = SimConfig(width=MAP_WORLD_SIZE, height=MAP_WORLD_SIZE, routes=["survey", "crossing"], survey_duration_s=360.0,
                    route_duration_s=60.0, dataset_stride=30)  # fmt: skip
    export_dataset(sim, d / "dataset", progress=False, world=world_of(sim))
    other = SimConfig(
        seed=1,
        width=MAP_WORLD_SIZE,
        height=MAP_WORLD_SIZE,
        routes=["crossing"],
        route_duration_s=60.0,
        dataset_stride=30,
    )
    export_dataset(other, d / "other", progress=False, world=world_of(other))
    cfg = MapBuildConfig(selection=MapSelection(sources=[0]))
    build_map(d / "dataset", d / "map", cfg, progress=False)
    return {"dir": d, "dataset": d / "dataset", "map": d / "map", "other": d / "other"}

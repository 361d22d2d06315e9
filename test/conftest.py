"""Shared fixtures. Real data is read from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
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

"""pip install path for pose2rgbd (no ROS needed).

Under colcon the package builds with ament_cmake (see CMakeLists.txt and docs/ros-build.md);
this file is what `pip install .` uses on machines without ROS.
torch is not pinned here so that users keep the CUDA build they have; the setup script
(scripts/setup.sh) installs torch==2.13.0 first, which satisfies the range below.
"""

from setuptools import find_packages, setup

setup(
    name="pose2rgbd",
    version="0.1.0",
    description="Neural RGB-D rendering from 6-DoF poses for UAVs and robots (ROS 2 + offline).",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pose2rgbd", "pose2rgbd.*", "pose2rgbd_ros", "pose2rgbd_ros.*"]),
    package_data={"pose2rgbd": ["py.typed", "resources/*", "resources/**/*"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10.4",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "numba>=0.58",
        "pymap3d>=3.0",
        "imageio>=2.30",
        "onnxruntime>=1.17",  # serving exported models (pose2rgbd export; engine backend onnxruntime)
        "pycolmap>=3.12",  # COLMAP models in (convert images --format colmap); SfM for video-only poses
        "py-gpmf-parser>=0.1",  # GPS / IMU from the GPMF track inside GoPro MP4 files
    ],
    extras_require={
        "train": ["torch>=2.1", "tensorboard>=2.14", "kornia>=0.7", "onnx>=1.15", "onnxscript>=0.1"],
        "dev": [
            "torch>=2.1",
            "tensorboard>=2.14",
            "kornia>=0.7",  # differentiable warping and SSIM (self-supervised depth, consistency losses)
            "onnx>=1.15",
            "onnxscript>=0.1",  # torch.onnx export
            "pytest>=7.4",
            "pytest-xdist>=3.3",
            "hypothesis>=6.80",
            "ruff>=0.17,<0.18",  # pinned minor: new ruff releases add rules and formatting changes
            "mypy>=1.8",
            "types-PyYAML",
            "catkin_pkg>=0.5",
            "import-linter>=2.16",  # layering contracts (acyclic_siblings) (pyproject.toml [tool.importlinter])
            "build>=1.0",  # the sdist and the wheel of scripts/test_wheel.sh
            "setuptools>=70.1",  # builds the wheel without isolation in test_packaging_pip.py (bdist_wheel built in)
        ],
    },
    entry_points={
        "console_scripts": [
            "pose2rgbd = pose2rgbd.cli.main:main",
        ],
    },
)

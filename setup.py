"""pip install path for pose2rgbd (no ROS needed).

Under colcon the package builds with ament_cmake (see CMakeLists.txt and docs/ros-build.md);
this file is what `pip install .` uses on machines without ROS.
torch is not pinned here so that users keep the CUDA build they have; the setup script
(scripts/setup.sh) installs torch==2.13.0 first, which satisfies the range below.
"""

from setuptools import find_packages, setup

OPEN3D_CPU = "open3d-cpu>=0.18; sys_platform == 'linux' and platform_machine == 'x86_64'"
OPEN3D_OTHER = "open3d>=0.18; sys_platform != 'linux' or platform_machine != 'x86_64'"

setup(
    name="pose2rgbd",
    version="0.1.0",
    description="Neural RGB-D rendering from 6-DoF poses for UAVs and robots (ROS 2 + offline).",
    python_requires=">=3.10,<3.13",
    packages=find_packages(
        include=["pose2rgbd", "pose2rgbd.*", "pose2rgbd_ros", "pose2rgbd_ros.*"],
        exclude=["pose2rgbd.testing", "pose2rgbd.testing.*"],  # stand-ins of the tests and benchmarks
    ),
    package_data={"pose2rgbd": ["py.typed", "resources/*", "resources/**/*"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10.4",
        "lz4>=4.0",  # the fused geometry's scratch copy of the keyframes' depth (rosbags needs it too)
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "numba>=0.58",
        "pymap3d>=3.0",
        "imageio>=2.30",
        "pillow>=9.1",  # EXIF of photos (a query's focal length: pose2rgbd/geometry/exif.py)
        "onnxruntime>=1.17",  # serving exported models (pose2rgbd export; engine backend onnxruntime)
        "pycolmap>=3.12",  # COLMAP models in (convert images --format colmap); SfM for video-only poses
        "py-gpmf-parser>=0.1",  # GPS / IMU from the GPMF track inside GoPro MP4 files
    ],
    extras_require={
        # the fused geometry of a place (pose2rgbd map fuse): Open3D, the CPU build where PyPI has it (Linux x86-64;
        # it links libusb-1.0: apt install libusb-1.0-0)
        "fusion": [OPEN3D_CPU, OPEN3D_OTHER],
        "train": ["torch>=2.1", "tensorboard>=2.14", "kornia>=0.7", "onnx>=1.15", "onnxscript>=0.1"],
        # a place map built in pieces on a cluster (pose2rgbd map build --dask; docs/place-map.md)
        "distributed": ["dask[distributed]>=2024.1"],
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
            OPEN3D_CPU,  # the fused geometry (extra "fusion")
            OPEN3D_OTHER,
            "dask[distributed]>=2024.1",  # the [distributed] extra, so CI runs the map build on a local cluster
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

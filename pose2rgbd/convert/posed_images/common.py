"""What every posed-image importer returns (:class:`PosedImages`), the importer config, and shared helpers.

Conventions of the result (the dataset's): ``T_world_cam`` maps points from the camera's REP-103 optical frame
(x right, y down, z forward) into the source's world frame; intrinsics use the OpenCV / ROS convention (pixel
centres at integers), distortion OpenCV's models (``opencv``: k1, k2, p1, p2[, k3[, k4, k5, k6]]; ``fisheye``:
k1, k2, k3, k4; :mod:`pose2rgbd.geometry.lens`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose2rgbd.config import SIZE_HELP, help_field, parse_size
from pose2rgbd.convert.config import ConvertOutput
from pose2rgbd.convert.posed_images.errors import PoseImportError
from pose2rgbd.errors import ConfigError, GeometryError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.camera_axes import CAMERA_AXES
from pose2rgbd.geometry.lens import LENS_MODELS, Distortion

FORMATS = ("auto", "transforms-json", "colmap", "llff", "kitti", "tum")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".bmp", ".tif", ".tiff")


@dataclass
class ImagesConfig:
    """Posed images (transforms.json, COLMAP, LLFF, KITTI / TUM trajectory + image folder) -> dataset."""

    format: str = help_field(
        "auto", "input format: auto, transforms-json, colmap, llff (poses_bounds.npy), kitti or tum (docs/byod.md)"
    )
    images: str = help_field(
        "", "image folder (KITTI / TUM: required; COLMAP: default the images/ folder of the project; LLFF: default "
        "images/ beside poses_bounds.npy, or e.g. images_4; "
        "transforms.json: paths are relative to the json file)"
    )  # fmt: skip
    fx: float = help_field(0.0, "focal length x in pixels, for formats without intrinsics (0: not given)")
    fy: float = help_field(0.0, "focal length y in pixels (0: = fx)")
    cx: float = help_field(-1.0, "principal point x in pixels, pixel centres at integers (-1: (width - 1) / 2)")
    cy: float = help_field(-1.0, "principal point y in pixels, pixel centres at integers (-1: (height - 1) / 2)")
    hfov_deg: float = help_field(0.0, "horizontal field of view (deg) instead of fx, for formats without intrinsics")
    distortion: list[float] = help_field(
        [], "KITTI / TUM: the images' lens distortion in OpenCV's order (opencv: k1,k2,p1,p2[,k3[,k4,k5,k6]]; "
        "fisheye: k1,k2,k3,k4), undistorted on import; empty: none"
    )  # fmt: skip
    distortion_model: str = help_field("opencv", "model of --distortion: opencv or fisheye (OpenCV's)")
    calib: str = help_field("", "KITTI calib.txt (default: calib.txt beside the poses file or the image folder)")
    kitti_camera: int = help_field(
        -1, "KITTI camera of the images, the calib line P<N> (-1: N from an image folder named image_N, else 0); "
        "poses are of camera 0, so N > 0 adds that camera's baseline"
    )  # fmt: skip
    times: str = help_field("", "KITTI times.txt, one time (s) per pose (default: times.txt beside calib.txt)")
    image_list: str = help_field(
        "", "TUM: a 'timestamp filename' list (e.g. rgb.txt; names relative to --images, or to the list's folder "
        "where the files are there instead); default: the timestamp is the image file name"
    )  # fmt: skip
    tolerance_s: float = help_field(0.02, "TUM: an image needs a pose within this many seconds of its timestamp")
    skip_unmatched: bool = help_field(
        False, "TUM: drop images without a pose within tolerance_s (with depth_list: or without a depth image "
        "within depth_tolerance_s) instead of failing"
    )  # fmt: skip
    skip_missing: bool = help_field(
        False, "transforms.json: leave out frames whose image file, or depth file (depth_file_path), does not exist "
        "(listed in the report) instead of failing; TUM: leave out listed images that do not exist"
    )  # fmt: skip
    allow_outside: bool = help_field(
        False, "transforms.json: allow file_path / depth_file_path outside the json's folder (../, absolute paths); "
        "default: refused"
    )  # fmt: skip
    camera_axes: str = help_field(
        "optical", "KITTI / TUM: axes of the trajectory's camera frame: optical (x right, y down, z forward; "
        "KITTI, TUM RGB-D, ORB-SLAM), opengl (x right, y up, z back) or flu (x forward, y left, z up)"
    )  # fmt: skip
    frame_interval_s: float = help_field(1.0, "stamp step between frames when the source has no times (s)")
    undistort_alpha: float = help_field(
        0.0, "undistortion: 0 keeps only valid pixels (crops), 1 keeps every source pixel (black borders)"
    )
    depth: str = help_field(
        "", "folder of depth maps named as the images (.npy float metres, or 16-bit .png divided by depth_scale); "
        "empty: RGB-only (transforms.json frames' depth_file_path are used when present); depth with timestamps of "
        "its own (TUM RGB-D): depth_list"
    )  # fmt: skip
    depth_list: str = help_field(
        "", "TUM: a 'timestamp filename' list of depth images (TUM RGB-D's depth.txt; names relative to the list's "
        "folder): each image is paired with the depth image nearest in time within depth_tolerance_s, each depth "
        "image used once (TUM's associate.py); instead of depth"
    )  # fmt: skip
    depth_tolerance_s: float = help_field(
        0.02, "depth_list: an image's depth image must be within this many seconds of its timestamp"
    )  # fmt: skip
    depth_list_reuse: bool = help_field(
        False, "depth_list: pair every image with its nearest depth image even where a nearer image has it too "
        "(a depth image may serve several images); default: each depth image once, as TUM's associate.py"
    )  # fmt: skip
    depth_scale: float = help_field(
        0.0, "16-bit depth png units per metre (1000: millimetres; TUM RGB-D: 5000); 0: the source's own "
        "(transforms.json depth_unit_scale_factor), else 1000"
    )  # fmt: skip
    depth_invalid_codes: str = help_field(
        "zero,max", "integer depth values that mean 'no measurement' (read as NaN, counted in the report): zero, "
        "max (the type's maximum, 65535 for 16-bit: saturated / no return), integers, comma-separated; none: all "
        "are depths"
    )  # fmt: skip
    size: str = help_field("", SIZE_HELP)
    world_frame: str = help_field("map", "name of the world frame written to the manifest (the source's own frame)")
    strict: bool = help_field(False, "refuse to write the dataset when the pose check finds a likely mistake")
    output: ConvertOutput = field(default_factory=ConvertOutput, metadata={"help": "the dataset written"})

    def __post_init__(self) -> None:
        if isinstance(self.output, dict):
            from pose2rgbd.config import from_dict

            self.output = from_dict(ConvertOutput, self.output, where="output")
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.camera_axes not in CAMERA_AXES:
            raise ConfigError(f"camera_axes must be one of {CAMERA_AXES}, got {self.camera_axes!r}")
        if self.output.rgb_encoding not in ("png", "jpg"):
            raise ConfigError(f"output.rgb_encoding must be 'png' or 'jpg', got {self.output.rgb_encoding!r}")
        if not 0.0 <= self.undistort_alpha <= 1.0:
            raise ConfigError(f"undistort_alpha must be in [0, 1], got {self.undistort_alpha}")
        for k in ("tolerance_s", "depth_tolerance_s", "frame_interval_s"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{k} must be > 0, got {getattr(self, k)}")
        if self.depth and self.depth_list:
            raise ConfigError(
                f"depth ({self.depth}) and depth_list ({self.depth_list}) both given: --depth DIR takes depth maps "
                "named as the images, --depth-list FILE pairs them by timestamp; give one"
            )
        if not self.depth_scale >= 0:
            raise ConfigError(f"depth_scale must be > 0 (units per metre; 0: the source's own), got {self.depth_scale}")
        parse_invalid_codes(self.depth_invalid_codes)
        if self.fx < 0 or self.fy < 0 or not 0 <= self.hfov_deg < 180:
            raise ConfigError("fx, fy must be >= 0 and hfov_deg in [0, 180)")
        if self.distortion_model not in LENS_MODELS:
            raise ConfigError(f"distortion_model must be one of {LENS_MODELS}, got {self.distortion_model!r}")
        if self.distortion:
            padded = list(self.distortion) + [0.0] * (4 - len(self.distortion))  # k1[,k2]: the rest zero
            try:
                Distortion(self.distortion_model, tuple(padded))
            except GeometryError as e:
                raise ConfigError(
                    f"distortion {self.distortion}: {e} (opencv: k1,k2,p1,p2[,k3[,k4,k5,k6]]; fisheye: k1,k2,k3,k4)"
                ) from None
        if self.size:
            self.size_wh()

    def size_wh(self) -> tuple[int, int] | None:
        return parse_size(self.size, "size")

    def has_intrinsics(self) -> bool:
        return self.fx > 0 or self.hfov_deg > 0

    def flag_camera(self, width: int, height: int, what: str) -> SourceCamera:
        """The camera the flags describe, for a format without intrinsics (``what`` names the format)."""
        if self.fx > 0:
            fx = self.fx
        elif self.hfov_deg > 0:
            fx = (width / 2.0) / float(np.tan(np.deg2rad(self.hfov_deg) / 2.0))
        else:
            raise ConfigError(
                f"{what} carries no camera intrinsics: give --fx (and --fy, --cx, --cy) in pixels, or --hfov DEG"
            )
        fy = self.fy if self.fy > 0 else fx
        cx = self.cx if self.cx >= 0 else (width - 1) / 2.0
        cy = self.cy if self.cy >= 0 else (height - 1) / 2.0
        return SourceCamera(width, height, fx, fy, cx, cy, *self.flag_distortion())

    def flag_or_exif_cameras(
        self, images: list[Path], width: int, height: int, what: str
    ) -> tuple[list[SourceCamera], str]:
        """Per image: the camera the flags describe (all the same), or -- without flags -- each photo's own from its
        EXIF focal length (:mod:`pose2rgbd.geometry.exif`); with the note that says which. Neither: an error naming
        what to give."""
        if self.has_intrinsics():
            return [self.flag_camera(width, height, what)] * len(images), "intrinsics from the flags"
        from pose2rgbd.geometry.exif import exif_camera

        cams, lacking = [], []
        for p in images:
            e = exif_camera(p)
            if e is None:
                lacking.append(p)
                continue
            c = e.camera
            cams.append(SourceCamera(c.width, c.height, c.fx, c.fy, c.cx, c.cy, *self.flag_distortion()))
        if lacking:
            raise ConfigError(
                f"{what} carries no camera intrinsics and {len(lacking)} of {len(images)} images have no usable EXIF "
                f"focal length (e.g. {lacking[0].name}): give --fx (and --fy, --cx, --cy) in pixels, or --hfov DEG"
            )
        return cams, f"intrinsics from each image's EXIF focal length ({len(set(cams))} distinct)"

    def flag_distortion(self) -> tuple[tuple[float, ...], str]:
        """``(coefficients, model)`` of ``--distortion`` (k1 or k1,k2 alone: the rest zero); ``((), model)``: none."""
        d = [float(x) for x in self.distortion]
        d += [0.0] * (4 - len(d)) if d else []
        return (tuple(d) if any(d) else ()), self.distortion_model


@dataclass(frozen=True)
class SourceCamera:
    """Intrinsics of the source images: pinhole (OpenCV pixel-centre convention) + the lens's distortion in
    OpenCV's models (:mod:`pose2rgbd.geometry.lens`): ``opencv`` (k1, k2, p1, p2[, k3[, k4, k5, k6]]) or
    ``fisheye`` (k1, k2, k3, k4)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = ()  # in the order of ``model``; empty: none
    model: str = "opencv"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or not (self.fx > 0 and self.fy > 0):
            raise PoseImportError(f"invalid camera intrinsics {self}: width, height, fx and fy must be > 0")
        if not all(np.isfinite([self.fx, self.fy, self.cx, self.cy, *self.dist])):
            raise PoseImportError(f"camera intrinsics contain NaN or inf: {self}")
        if self.dist:
            try:
                Distortion(self.model, self.dist)
            except GeometryError as e:
                raise PoseImportError(f"camera {self}: {e}") from e

    @property
    def has_distortion(self) -> bool:
        return any(abs(x) > 0 for x in self.dist)

    @property
    def distortion(self) -> Distortion | None:
        return Distortion(self.model, self.dist) if self.has_distortion else None

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def pinhole(self) -> PinholeCamera:
        return PinholeCamera(self.width, self.height, self.fx, self.fy, self.cx, self.cy)

    def to_dict(self) -> dict[str, object]:
        """As the dataset manifest's ``source_cameras`` entries (docs/dataset-format.md)."""
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx,
                "cy": self.cy, "model": self.model if self.has_distortion else "pinhole",
                "distortion": list(self.dist) if self.has_distortion else []}  # fmt: skip


@dataclass
class PosedImages:
    """An importer's result: one entry per frame, in dataset order."""

    kind: str  # "transforms.json", "colmap", "llff", "kitti", "tum"
    source: Path  # the pose file or model folder
    images: list[Path]
    T_world_cam: np.ndarray  # (N, 4, 4), REP-103 optical camera frame
    stamps_ns: np.ndarray  # (N,) int64, non-decreasing
    cameras: list[SourceCamera]  # per frame
    points: np.ndarray | None = None  # (M, 3) scene points in the world frame (COLMAP)
    observations: list[np.ndarray] | None = None  # per frame: indices into points it observes
    up_hint: np.ndarray | None = None  # the world's up axis when the format defines one
    convention: str = ""  # the format's camera convention, for messages of the pose check
    # a format of quaternions: the order they were read in ("xyzw": TUM) and the camera axes applied after them
    # (T = T_file @ quaternion_axes): the pose check tries the other order; "": a format of matrices
    quaternion_order: str = ""
    quaternion_axes: np.ndarray | None = None
    depths: list[Path | None] | None = None
    assumptions: list[str] = field(default_factory=list)
    # integer depth units per metre declared by the source for its own depth files (``depths``), and where
    depth_scale: float | None = None
    depth_scale_note: str = ""
    skipped: list[str] = field(default_factory=list)  # entries of the source left out (skip_missing)
    pose_units: str = "m"  # "unscaled": a format without a scale of its own (structure from motion)
    bounds: np.ndarray | None = None  # (N, 2) near / far depth of the scene content per frame (LLFF), scene units
    skipped_depth: list[str] = field(default_factory=list)  # their depth file missing (skip_missing): the depth path
    # what the user should know about the import though it goes on (logged once, kept in the report's "warnings")
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if n == 0:
            raise PoseImportError(f"{self.source}: no posed images found")
        self.T_world_cam = np.asarray(self.T_world_cam, dtype=np.float64)
        if self.T_world_cam.shape != (n, 4, 4) or len(self.stamps_ns) != n or len(self.cameras) != n:
            raise PoseImportError(
                f"{self.source}: {n} images but {len(self.T_world_cam)} poses, {len(self.stamps_ns)} stamps and "
                f"{len(self.cameras)} cameras; give one of each per image (poses as (N, 4, 4))"
            )
        self.stamps_ns = np.asarray(self.stamps_ns, dtype=np.int64)
        back = np.flatnonzero(np.diff(self.stamps_ns) < 0)
        if back.size:
            k = int(back[0]) + 1
            raise PoseImportError(
                f"{self.source}: frame {k} ({self.images[k].name}) is stamped earlier than frame {k - 1}; frames "
                "must be in time order (sort them, or check the times file)"
            )
        # a reader has checked its poses with line numbers already; a hand-made PosedImages has not
        self.T_world_cam = check_rotations(self.T_world_cam, [f"{self.source}: {p.name}" for p in self.images])


def parse_invalid_codes(spec: str) -> tuple[str, ...]:
    """``"zero,max"`` -> ``("zero", "max")``; plain integers are kept as their decimal text; ``none`` -> ()."""
    items = [s.strip().lower() for s in str(spec).split(",") if s.strip()]
    if items == ["none"] or not items:
        return ()
    out: list[str] = []
    for s in items:
        if s in ("zero", "max"):
            out.append(s)
        elif s.isdigit():
            out.append(str(int(s)))
        else:
            raise ConfigError(
                f"depth_invalid_codes: {s!r} is not a depth code; give zero, max (the type's maximum, 65535 for "
                "16-bit), non-negative integers, comma-separated, or none"
            )
    return tuple(dict.fromkeys(out))


def check_rotations(T: np.ndarray, where: list[str]) -> np.ndarray:
    """Refuse non-finite poses, non-orthonormal rotations and reflections (det -1: one axis flipped alone);
    re-orthonormalise (SVD) rotations that are orthonormal to 1e-3 (text files round to ~7 digits)."""
    T = np.asarray(T, dtype=np.float64).copy()
    for i in range(len(T)):
        if not np.all(np.isfinite(T[i])):
            raise PoseImportError(f"{where[i]}: pose contains NaN or inf")
        R = T[i, :3, :3]
        d = float(np.linalg.det(R))
        if d < 0:
            raise PoseImportError(
                f"{where[i]}: the rotation is a reflection (determinant {d:.3f}): a single camera axis was flipped "
                "(e.g. only y, or only z, of an OpenGL pose); flip two axes (y and z) or none"
            )
        if np.abs(R.T @ R - np.eye(3)).max() > 1e-3:
            s = np.linalg.svd(R, compute_uv=False)
            raise PoseImportError(
                f"{where[i]}: the rotation part is not orthonormal (singular values {np.round(s, 4).tolist()}): "
                "a scaled or sheared pose (instant-ngp 'scale'? a projection matrix instead of a pose?)"
            )
        u, _, vt = np.linalg.svd(R)
        T[i, :3, :3] = u @ vt
        T[i, 3] = (0.0, 0.0, 0.0, 1.0)
    return T


def image_files(folder: Path, what: str) -> list[Path]:
    """The image files in ``folder`` sorted by name (refuses a missing or empty folder)."""
    if not folder.is_dir():
        raise PoseImportError(f"{folder}: image folder not found ({what}); give it with --images DIR")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES)
    if not files:
        raise PoseImportError(f"{folder}: no image files ({', '.join(sorted({s.lower() for s in IMAGE_SUFFIXES}))})")
    return files


def missing_images(paths: list[Path], source: Path, hint: str = "") -> None:
    """One error listing every missing image (the first few by name), ending in ``hint`` (what to do)."""
    miss = [p for p in paths if not p.is_file()]
    if miss:
        shown = ", ".join(str(p) for p in miss[:3]) + (" ..." if len(miss) > 3 else "")
        raise PoseImportError(f"{source}: {len(miss)} of {len(paths)} images are missing: {shown}{hint}")


def stamps_from_interval(n: int, interval_s: float) -> np.ndarray:
    return (np.arange(n, dtype=np.int64) * round(interval_s * 1e9)).astype(np.int64)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header by OpenCV (decodes it)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # UNCHANGED: as stored, no EXIF rotation
    if img is None:
        raise PoseImportError(f"{path}: cannot decode image")
    return int(img.shape[1]), int(img.shape[0])

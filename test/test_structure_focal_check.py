"""The queries' camera against their matches (pose2rgbd/inference/focal_check.py): a wrong focal length moves the
structure localizer's fixes along their view at small sigmas; the localizer measures the focal length the inliers
fit, warns once with it, and flags the fixes made with a camera that does not fit."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.inference.focal_check import GROSS, MIN_FIXES, FocalCheck, FocalEstimate, focal_scale


def _scene(f_true: float, n: int = 120, noise_px: float = 0.3, seed: int = 0) -> tuple:
    """World points 4-12 m in front of a 256x192 camera at a tilted pose, their pixels with ``f_true``."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    K = np.array([[f_true, 0, 127.5], [0, f_true, 95.5], [0, 0, 1.0]])
    uv = rng.uniform([5, 5], [250, 186], (n, 2))
    z = rng.uniform(4.0, 12.0, n)
    p_cam = np.column_stack([(uv[:, 0] - 127.5) / f_true * z, (uv[:, 1] - 95.5) / f_true * z, z])
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.1, -0.3, 0.05]).as_matrix()
    T[:3, 3] = [2.0, -1.0, 0.5]
    X = p_cam @ T[:3, :3].T + T[:3, 3]
    x = uv + rng.normal(0, noise_px, uv.shape)
    return T, X, x, K


def test_focal_scale_finds_the_factor_of_a_wrong_focal_length() -> None:
    """With the true focal length the factor is 1 within 1 %; given 1.3 times it (the pose as given), the fit finds
    1 / 1.3 within 2 %; the standard deviation is small and finite; fewer than 7 points give NaN."""
    T, X, x, K = _scene(100.0)
    est = focal_scale(T, X, x, K)
    assert abs(est.scale - 1.0) < 0.01 and 0 < est.sigma < 0.01, est
    wrong = K.copy()
    wrong[0, 0] = wrong[1, 1] = 130.0
    est = focal_scale(T, X, x, wrong)
    assert abs(est.scale - 1 / 1.3) < 0.02, est
    assert math.isnan(focal_scale(T, X[:6], x[:6], K).scale)


def test_focal_check_judges_the_camera_on_the_median_of_the_last_fixes() -> None:
    """Within the tolerance nothing is flagged; a window whose median is off flags every fix from the fifth on, also
    one whose own factor fits; before that, only a fix far off by itself; tolerance 0 judges nothing; reset forgets."""
    check = FocalCheck(0.05)
    for s in [1.01, 0.99, 1.03, 0.98, 1.0, 1.02]:
        assert check.add(FocalEstimate(s, 0.005)) == ""
    assert check.verdict() == "" and abs(check.median - 1.005) < 1e-9
    check.reset()
    reasons = [check.add(FocalEstimate(s, 0.005)) for s in [0.9, 0.91, 0.89, 0.9]]
    assert reasons == [""] * 4  # 10 % off: judged on the window only, which is not yet full enough
    assert check.add(FocalEstimate(0.92, 0.005)).startswith("camera focal: the last 5 fixes")
    assert check.add(FocalEstimate(1.0, 0.005)) != ""  # the camera is wrong: this fix was made with it too
    check.reset()
    far = 1.0 - GROSS - 0.05
    assert check.add(FocalEstimate(far, 0.005)).startswith("camera focal: this fix")
    assert check.add(FocalEstimate(far, 0.05)) == ""  # as far off, but too uncertain to say so alone
    off = FocalCheck(0.0)
    assert all(off.add(FocalEstimate(0.5, 0.001)) == "" for _ in range(MIN_FIXES + 2)) and off.verdict() == ""


def test_each_camera_is_judged_on_its_own_fixes() -> None:
    """Photos of two cameras in turn (each photo's EXIF): the one whose fixes fit 0.8 x its focal length is judged
    wrong from its fifth fix, warned about once; the other, which fits, is never flagged; the summary counts."""
    check = FocalCheck(0.05)
    right, wrong = (100.0, 100.0, 64.0, 48.0, 128, 96), (300.0, 300.0, 64.0, 48.0, 128, 96)
    flags_right, flags_wrong, warnings = [], [], 0
    for k in range(7):
        flags_right.append(check.add(FocalEstimate(1.0 + 0.01 * (k % 2), 0.005), right))
        warnings += check.first_verdict()
        flags_wrong.append(check.add(FocalEstimate(0.8, 0.02), wrong))
        warnings += check.first_verdict()
    assert flags_right == [""] * 7 and check.cameras == 2
    assert flags_wrong[: MIN_FIXES - 1] == [""] * (MIN_FIXES - 1) and all(flags_wrong[MIN_FIXES - 1 :])
    assert warnings == 1
    assert check.median == pytest.approx(0.8) and check.flagged == sum(map(bool, flags_wrong))


# the factors and standard deviations of the 16 fixes of tourist photos of the Statue of Liberty (800x1200, 18 deg
# field of view, the reconstruction's one shared camera; fixes 0.02-0.10 units from the reference poses but two)
STATUE = [(1.444, 0.206), (1.080, 0.098), (0.807, 0.017), (1.114, 0.090), (1.111, 0.055), (1.108, 0.060),
          (1.048, 0.021), (0.979, 0.078), (1.148, 0.052), (1.093, 0.044), (0.881, 0.059), (1.039, 0.055),
          (0.891, 0.134), (1.052, 0.095), (0.971, 0.032), (1.367, 0.030)]  # fmt: skip


def test_factors_that_scatter_widely_do_not_judge_a_camera_wrong() -> None:
    """Photos through a long lens fix the factor to 5-20 % each: their median (1.08 here) is not significant, and no
    one of them is flagged alone; the same median with a tight spread is."""
    check = FocalCheck(0.05)
    assert [check.add(FocalEstimate(s, sd)) for s, sd in STATUE] == [""] * len(STATUE)
    assert check.median > 1.05 and check.verdict() == ""
    tight = FocalCheck(0.05)
    reasons = [tight.add(FocalEstimate(1.08 + 0.005 * (k % 3), 0.005)) for k in range(8)]
    assert reasons[-1].startswith("camera focal: the last 8 fixes")


def test_the_summary_says_within_only_when_the_factor_is_within() -> None:
    """`localize images`'s camera line: a median factor further off than the tolerance but not significant (the
    statue's scattered photos, or fewer than MIN_FIXES fixes) is not called "within 5%": it says how far off it is
    and why nothing is flagged; a fitting camera is within, a wrong one OFF."""
    from pose2rgbd.cli.localize import _focal_line

    scattered = FocalCheck(0.05)
    for s, sd in STATUE:
        scattered.add(FocalEstimate(s, sd))
    line = _focal_line(scattered, 0.05)
    assert "within" not in line and "OFF" not in line, line
    assert f"matches fit {scattered.median:.3f} x" in line and "more than 5%, but not significant yet" in line
    assert "scatter too much" in line and "--camera FX,FY,CX,CY" in line
    few = FocalCheck(0.05)
    few.add(FocalEstimate(1.2, 0.05))
    assert "not significant yet -- too few fixes to judge (5 needed)" in _focal_line(few, 0.05)
    fits, wrong = FocalCheck(0.05), FocalCheck(0.05)
    for k in range(8):
        fits.add(FocalEstimate(1.01 + 0.005 * (k % 3), 0.005))
        wrong.add(FocalEstimate(1.08 + 0.005 * (k % 3), 0.005))
    assert _focal_line(fits, 0.05).endswith("(within 5%)")
    assert "(OFF by more than 5%); its fixes are flagged" in _focal_line(wrong, 0.05)


@pytest.fixture(scope="module")
def crossing(map_world: dict) -> dict:
    from pose2rgbd.dataset import Dataset

    ds = Dataset(map_world["dataset"])
    rows = np.flatnonzero(ds.frames.source_id == 1)[:12]
    return {"images": [ds.read_rgb(int(i)) for i in rows], "T": ds.frames.T_world_cam[rows]}


def _localize(map_world: dict, images: list, scale: float, **over: object) -> tuple:
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    pm = PlaceMap(map_world["map"])
    loc = StructureLocalizer(pm, dataclasses.replace(StructureConfig(), use_previous_fix=False, **over))
    cam = pm.camera(0)
    loc.query_intrinsics = (scale * cam.fx, scale * cam.fy, cam.cx, cam.cy)
    return loc, [loc.localize_one(im) for im in images]


def test_a_camera_of_the_wrong_focal_length_is_named_and_its_fixes_flagged(
    map_world: dict, crossing: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The simulator's crossing route against the survey's map: with the map's camera no fix is flagged for the
    camera and the median factor is 1 within 3 %; with 1.3 times its focal length the fixes are off by more (the
    defect), the median factor is below 0.85, one warning names the focal length the matches fit, every fix from
    the fifth is flagged, its covariance inflated by ood_covariance_scale over the same fix unchecked."""
    loc, good = _localize(map_world, crossing["images"], 1.0)
    ok = [f for f in good if f.ok]
    assert len(ok) >= 8 and not any("camera focal" in f.flag for f in ok)
    assert abs(loc.focal.median - 1.0) < 0.03, loc.focal.median
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.inference.structure"):
        loc, bad = _localize(map_world, crossing["images"], 1.3)
    warned = [r.getMessage() for r in caplog.records if "does not fit their matches" in r.getMessage()]
    assert len(warned) == 1 and "about" in warned[0] and "--camera" in warned[0], warned
    assert loc.focal.median < 0.85
    fixed = [k for k, f in enumerate(bad) if f.ok]
    assert len(fixed) >= 8
    assert all("camera focal" in bad[k].flag for k in fixed[MIN_FIXES - 1 :])
    _, unchecked = _localize(map_world, crossing["images"], 1.3, focal_tolerance=0.0)
    k = fixed[-1]
    assert unchecked[k].ok and "camera focal" not in unchecked[k].flag
    np.testing.assert_allclose(bad[k].T_world_cam, unchecked[k].T_world_cam)
    if not unchecked[k].flag:  # flagged by the gate too: inflated once, not twice
        np.testing.assert_allclose(bad[k].covariance, 100.0 * unchecked[k].covariance, rtol=1e-9)
    err = [np.linalg.norm(f.T_world_cam[:3, 3] - T[:3, 3]) for f, T in zip(bad, crossing["T"]) if f.ok]
    err_good = [np.linalg.norm(f.T_world_cam[:3, 3] - T[:3, 3]) for f, T in zip(good, crossing["T"]) if f.ok]
    assert np.median(err) > 2 * np.median(err_good)


def test_localize_images_says_whether_the_camera_fits(map_world: dict, crossing: dict, tmp_path: Path, capsys) -> None:
    """`localize images --camera` prints the median factor of the focal lengths and whether it is within the
    tolerance, pointing to --camera when it is not; the CSV's flag column names the camera."""
    from pose2rgbd.placemap import PlaceMap

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, im in enumerate(crossing["images"]):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), im[..., ::-1])
    cam = PlaceMap(map_world["map"]).camera(0)
    for scale, expect in [(1.0, "within 5%"), (1.3, "OFF by more than 5%")]:
        out = tmp_path / f"p{scale}.csv"
        spec = f"{scale * cam.fx},{scale * cam.fy},{cam.cx},{cam.cy}"
        capsys.readouterr()
        assert main(["localize", "images", str(folder), "--map", str(map_world["map"]), "--camera", spec,
                     "--out", str(out), "--no-sequence", "--no-progress"]) == 0  # fmt: skip
        text = capsys.readouterr().out
        assert "fixes' matches fit" in text and expect in text, text
        assert ("camera focal" in out.read_text()) == (scale != 1.0)

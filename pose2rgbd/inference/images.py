"""Fit a camera image to a localizer's input: keep the aspect ratio, resize to cover the input, centre-crop.

The one place the localize node, ``pose2rgbd localize images`` and the covariance calibration turn an image of
any size into the ``input_hw`` an :class:`~pose2rgbd.models.interfaces.ImageToPose` model takes (its
``images_to_input`` accepts that size only). ``crop_scale`` > 1 resizes to ``crop_scale`` x the covering size
first, as a model trained on "resize to 144, centre-crop 128" expects (``crop_scale`` 144 / 128 = 1.125).
"""

from __future__ import annotations

import cv2
import numpy as np

from pose2rgbd.errors import ConfigError


def fit_to_input(rgb: np.ndarray, input_hw: tuple[int, int], *, crop_scale: float = 1.0) -> np.ndarray:
    """uint8 ``(H, W, 3)`` of any size -> uint8 ``(h, w, 3)`` with ``(h, w) = input_hw``: scaled (OpenCV, area
    filter when shrinking, bilinear when enlarging) so that it covers ``crop_scale`` x the input, then the
    centre is cut out. Raises :class:`ConfigError` for an image that is not 8-bit RGB or is empty."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ConfigError(f"image: expected uint8 (H, W, 3) RGB, got {a.dtype} {a.shape}")
    h_in, w_in = int(input_hw[0]), int(input_hw[1])
    h, w = a.shape[:2]
    if h < 1 or w < 1:
        raise ConfigError(f"image: {w}x{h} is empty")
    if not 1.0 <= crop_scale <= 4.0:
        raise ConfigError(f"crop_scale {crop_scale} is outside [1, 4]")
    if (h, w) == (h_in, w_in) and crop_scale == 1.0:
        return a
    s = max(h_in / h, w_in / w) * crop_scale
    nh, nw = max(h_in, round(h * s)), max(w_in, round(w * s))
    if (nh, nw) != (h, w):
        a = cv2.resize(a, (nw, nh), interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
    y0, x0 = (nh - h_in) // 2, (nw - w_in) // 2
    return np.ascontiguousarray(a[y0 : y0 + h_in, x0 : x0 + w_in])


AUTO_CROP = 0.0  # crop_scale "auto": the model's own preparation


def prepare_for_model(
    model: object, rgb: np.ndarray, input_hw: tuple[int, int], *, crop_scale: float = AUTO_CROP
) -> np.ndarray:
    """A camera frame ``(H, W, 3)`` uint8 as an image -> pose model takes it.

    ``crop_scale`` 0 (auto): the model's own ``prepare_images`` when it has one -- it knows how its training frames
    were made (PoseGAN squashes a frame to its load size and centre-crops, as its training cache did) -- else
    :func:`fit_to_input` at crop scale 1. A value in [1, 4]: :func:`fit_to_input` at that crop scale (keeps the
    aspect ratio), whatever the model."""
    if crop_scale == AUTO_CROP:
        prep = getattr(model, "prepare_images", None)
        if callable(prep):
            a = np.asarray(rgb)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise ConfigError(f"image: expected uint8 (H, W, 3) RGB, got {a.dtype} {a.shape}")
            prepared: np.ndarray = np.asarray(prep(a[None]))[0]
            return prepared
        crop_scale = 1.0
    return fit_to_input(rgb, input_hw, crop_scale=crop_scale)

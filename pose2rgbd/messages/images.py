"""``sensor_msgs/Image`` and ``CompressedImage`` <-> NumPy with NumPy/OpenCV (no cv_bridge, no ROS).

Readers (``image_to_numpy``, ``compressed_to_numpy``, ``image_msg_to_rgb``, ``image_msg_to_depth``) accept any
duck-typed message; builders (:func:`image`, :func:`compressed_image`) take a message factory first, like
every builder of :mod:`pose2rgbd.messages.build`. Decoding errors raise :class:`BagError`.

Why not cv_bridge: it needs a ROS installation, and the core package must work without one. The
encoding table below covers what cameras and depth sensors publish in practice.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pose2rgbd.errors import BagError
from pose2rgbd.messages.build import header
from pose2rgbd.messages.decode import decode_image_bytes, to_uint8
from pose2rgbd.messages.factory import MessageFactory

# a Bayer mosaic (ROS names it by its top-left 2x2 pattern) -> OpenCV's legacy demosaicing code, which names the
# pattern by its second row and column (ROS's rggb is OpenCV's BayerBG, as cv_bridge maps it); the codes named like
# ROS's (COLOR_BayerRGGB2RGB) are newer than some OpenCV builds a ROS distribution ships
_BAYER_OPENCV = {"rggb": "BG", "bggr": "RG", "gbrg": "GR", "grbg": "GB"}

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "8UC1": ("u1", 1),
    "8UC3": ("u1", 3),
    "8UC4": ("u1", 4),
    "16UC1": ("u2", 1),
    "16SC1": ("i2", 1),
    "32SC1": ("i4", 1),
    "32FC1": ("f4", 1),
    "64FC1": ("f8", 1),
    "yuv422": ("u1", 2),  # UYVY
    "yuv422_yuy2": ("u1", 2),  # YUYV
    # a colour camera's raw mosaic (e.g. a machine-vision camera's image_raw), named by its top-left 2x2 pattern
    **{f"bayer_{p}{bits}": ("u1" if bits == 8 else "u2", 1) for p in _BAYER_OPENCV for bits in (8, 16)},
}
_ALIASES = {"uyvy": "yuv422", "yuyv": "yuv422_yuy2", "8uc1": "8UC1", "8uc3": "8UC3", "16uc1": "16UC1", "32fc1": "32FC1"}


def _norm_encoding(enc: str) -> str:
    e = str(enc).strip()
    if e in ENCODINGS:
        return e
    return _ALIASES.get(e.lower(), e)


def _as_bytes(data: Any) -> np.ndarray:
    """Message ``data`` (NumPy array, bytes, array.array, list) -> flat uint8 array without copying when possible."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)  # array.array('B') from rclpy
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def image_to_numpy(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> array ``(H, W)`` (one channel) or ``(H, W, C)``, in the message's channel order.

    Honours ``step`` (row padding) and ``is_bigendian``; the result is native-endian and owns its data.
    """
    enc = _norm_encoding(msg.encoding)
    if enc not in ENCODINGS:
        raise BagError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(sorted(ENCODINGS))}")
    kind, ch = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    dt = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    row = w * ch * dt.itemsize
    buf = _as_bytes(msg.data)
    if h == 0 or w == 0:
        return np.zeros((h, w) if ch == 1 else (h, w, ch), dtype=dt.newbyteorder("="))
    if step < row:
        raise BagError(f"image {w}x{h} {enc}: step {step} < row size {row} bytes")
    need = step * (h - 1) + row
    if buf.size < need:
        raise BagError(f"image {w}x{h} {enc} step {step}: data has {buf.size} bytes, expected {step * h}")
    if buf.size >= step * h:
        rows = buf[: step * h].reshape(h, step)[:, :row]
    else:  # last row not padded
        rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    out = np.array(rows, dtype=np.uint8, copy=True).view(dt).astype(dt.newbyteorder("="), copy=False)
    return out.reshape((h, w) if ch == 1 else (h, w, ch))


def image(f: MessageFactory, stamp_ns: int, frame_id: str, arr: np.ndarray | None, encoding: str) -> Any:
    """Array in ``encoding``'s channel order -> ``sensor_msgs/msg/Image`` (little-endian, no padding).

    Values are cast to the encoding's dtype only when that is lossless in kind (e.g. float64 -> 32FC1);
    an integer/float mismatch raises :class:`BagError`. ``arr=None`` gives an empty 0x0 image (an output the
    model does not have).
    """
    enc = _norm_encoding(encoding)
    if enc not in ENCODINGS:
        raise BagError(f"unsupported image encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}")
    if arr is None:
        return f.new("sensor_msgs/msg/Image", header=header(f, stamp_ns, frame_id), encoding=enc)
    kind, ch = ENCODINGS[enc]
    a = np.asarray(arr)
    if a.ndim == 3 and ch == 1 and a.shape[2] == 1:
        a = a[..., 0]
    want_shape_ok = (a.ndim == 2 and ch == 1) or (a.ndim == 3 and a.shape[2] == ch)
    if not want_shape_ok:
        raise BagError(f"array of shape {a.shape} does not fit encoding {enc} ({ch} channel(s))")
    dt = np.dtype(kind)
    if a.dtype != dt:
        if (a.dtype.kind == "f") != (dt.kind == "f") or (dt.kind != "f" and a.dtype.itemsize > dt.itemsize):
            raise BagError(f"array dtype {a.dtype} does not fit encoding {enc} ({dt})")
        a = a.astype(dt)
    a = np.ascontiguousarray(a, dtype=dt.newbyteorder("<"))
    h, w = a.shape[:2]
    return f.new(
        "sensor_msgs/msg/Image",
        header=header(f, stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=enc,
        is_bigendian=0,
        step=w * ch * dt.itemsize,
        data=a.reshape(-1).view(np.uint8).copy(),
    )


# ---------------------------------------------------------------- compressed
def _parse_format(fmt: str) -> tuple[str, str, bool]:
    """``CompressedImage.format`` -> (original encoding or "", codec "jpeg"/"png"/"", compressedDepth?)."""
    f = str(fmt).strip()
    low = f.lower()
    depth = "compresseddepth" in low
    codec = "png" if "png" in low else "jpeg" if ("jpeg" in low or "jpg" in low) else ""
    orig = f.split(";")[0].strip() if ";" in f else ""
    return _norm_encoding(orig) if orig else "", codec, depth


def _to_channels(img: np.ndarray, src: str, want: str, bit_depth: int = 16) -> np.ndarray:
    """Convert a decoded colour image between rgb8/bgr8/mono8/rgba8/bgra8 layouts (8 bit); a 16-bit one is first
    reduced to 8 bits by ``bit_depth`` (:func:`pose2rgbd.messages.decode.to_uint8`; 0: inferred per image)."""
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = to_uint8(img, bit_depth)
        else:
            raise BagError(f"cannot convert a {img.dtype} image to {want}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if src == want:
        return img
    if src.startswith("bayer_") and want in _BAYER_TO:
        code = getattr(cv2, f"COLOR_Bayer{_BAYER_OPENCV[src[6:]]}2{_BAYER_TO[want]}")
        return cv2.cvtColor(np.ascontiguousarray(img), code)
    conv = {
        ("mono", "rgb"): cv2.COLOR_GRAY2RGB,
        ("mono", "bgr"): cv2.COLOR_GRAY2BGR,
        ("mono", "rgba"): cv2.COLOR_GRAY2RGBA,
        ("mono", "bgra"): cv2.COLOR_GRAY2BGRA,
        ("bgr", "rgb"): cv2.COLOR_BGR2RGB,
        ("rgb", "bgr"): cv2.COLOR_RGB2BGR,
        ("bgr", "mono"): cv2.COLOR_BGR2GRAY,
        ("rgb", "mono"): cv2.COLOR_RGB2GRAY,
        ("bgra", "rgb"): cv2.COLOR_BGRA2RGB,
        ("bgra", "bgr"): cv2.COLOR_BGRA2BGR,
        ("rgba", "rgb"): cv2.COLOR_RGBA2RGB,
        ("rgba", "bgr"): cv2.COLOR_RGBA2BGR,
        ("bgra", "mono"): cv2.COLOR_BGRA2GRAY,
        ("rgba", "mono"): cv2.COLOR_RGBA2GRAY,
        ("bgr", "rgba"): cv2.COLOR_BGR2RGBA,
        ("bgr", "bgra"): cv2.COLOR_BGR2BGRA,
        ("rgb", "rgba"): cv2.COLOR_RGB2RGBA,
        ("rgb", "bgra"): cv2.COLOR_RGB2BGRA,
        ("bgra", "rgba"): cv2.COLOR_BGRA2RGBA,
        ("rgba", "bgra"): cv2.COLOR_RGBA2BGRA,
        ("yuv422", "rgb"): cv2.COLOR_YUV2RGB_UYVY,
        ("yuv422", "bgr"): cv2.COLOR_YUV2BGR_UYVY,
        ("yuv422_yuy2", "rgb"): cv2.COLOR_YUV2RGB_YUY2,
        ("yuv422_yuy2", "bgr"): cv2.COLOR_YUV2BGR_YUY2,
    }
    code = conv.get((src, want))
    if code is None:
        if src.startswith("yuv422") and want == "mono":
            return np.ascontiguousarray(img[..., 1] if src == "yuv422" else img[..., 0])
        raise BagError(f"no conversion from {src} to {want}")
    return cv2.cvtColor(np.ascontiguousarray(img), code)


_LAYOUT = {
    "rgb8": "rgb",
    "bgr8": "bgr",
    "rgba8": "rgba",
    "bgra8": "bgra",
    "mono8": "mono",
    "8UC1": "mono",
    "8UC3": "bgr",  # cv_bridge/OpenCV convention
    "8UC4": "bgra",
    "mono16": "mono",
    "rgb16": "rgb",
    "bgr16": "bgr",
    "yuv422": "yuv422",
    "yuv422_yuy2": "yuv422_yuy2",
    **{f"bayer_{p}{bits}": f"bayer_{p}" for p in _BAYER_OPENCV for bits in (8, 16)},
}
_BAYER_TO = {"rgb": "RGB", "bgr": "BGR", "mono": "GRAY", "rgba": "RGBA", "bgra": "BGRA"}


def compressed_to_numpy(msg: Any, *, want: str = "rgb8", bit_depth: int = 16) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg/png, also ``compressedDepth``) -> array.

    ``want``: ``"rgb8"``, ``"bgr8"``, ``"rgba8"``, ``"bgra8"``, ``"mono8"`` (8-bit, converted; a 16-bit PNG by
    ``bit_depth``, 0: inferred per image), or ``"passthrough"``: as stored, in the original encoding's channel
    order named by the format string (``"rgb8; jpeg compressed bgr8"`` -> RGB), with 16-bit PNGs kept 16-bit.
    ``compressedDepth`` messages always decode to depth: uint16 (16UC1) or float32 metres (32FC1, NaN where
    invalid). A truncated or corrupt JPEG raises :class:`BagError` (libjpeg would decode it, grey or garbage
    where the data is missing or damaged: :func:`pose2rgbd.messages.decode.decode_image_bytes`).
    """
    orig, _codec, is_depth = _parse_format(msg.format)
    buf = _as_bytes(msg.data)
    if is_depth:
        return _decode_compressed_depth(buf, orig)
    if buf.size == 0:
        raise BagError(f"empty CompressedImage ({msg.format!r})")
    try:
        img = decode_image_bytes(buf, what=f"CompressedImage ({msg.format!r}, {buf.size} bytes)")
    except BagError as e:
        raise BagError(f"cannot decode {e}") from e
    src = "mono" if img.ndim == 2 else {3: "bgr", 4: "bgra"}.get(img.shape[2], "")
    if want in ("passthrough", "", None):
        if img.dtype != np.uint8:
            return img if img.ndim == 2 else _swap_rb(img, orig)
        dst = _LAYOUT.get(orig, src)
        if orig in ("", "mono8", "8UC1", "16UC1", "mono16") or dst not in ("rgb", "bgr", "rgba", "bgra", "mono"):
            dst = src
        elif src in ("bgr", "bgra"):  # same channel count as decoded; only the R/B order follows the original
            dst = dst[:3] + ("a" if src == "bgra" else "")
        return _to_channels(img, src, dst)
    target = _LAYOUT.get(_norm_encoding(want))
    if target not in ("rgb", "bgr", "rgba", "bgra", "mono") or want in ("8UC1", "8UC3", "8UC4"):
        raise BagError(f"compressed_to_numpy: want must be rgb8/bgr8/rgba8/bgra8/mono8/passthrough, not {want!r}")
    return _to_channels(img, src, target, bit_depth)


def _swap_rb(img: np.ndarray, orig: str) -> np.ndarray:
    if _LAYOUT.get(orig, "bgr").startswith("rgb"):
        return img[..., [2, 1, 0] + ([3] if img.shape[2] == 4 else [])].copy()
    return img


def _decode_compressed_depth(buf: np.ndarray, orig: str) -> np.ndarray:
    """image_transport ``compressedDepth``: 12-byte header (int32 format, float32 depthQuantA, depthQuantB) + PNG."""
    sig = bytes([0x89, 0x50, 0x4E, 0x47])
    start = bytes(buf[:64]).find(sig)
    if start < 0:
        raise BagError("compressedDepth message without a PNG payload (RVL is not supported)")
    img = cv2.imdecode(buf[start:], cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        raise BagError("cannot decode compressedDepth PNG as 16-bit")
    if orig == "32FC1":
        if start < 12:
            raise BagError("compressedDepth 32FC1 without quantization header")
        qa, qb = np.frombuffer(bytes(buf[start - 8 : start]), dtype="<f4")
        with np.errstate(divide="ignore"):
            d = (qa / (img.astype(np.float32) - qb)).astype(np.float32)
        d[img == 0] = np.nan
        return d
    return img


def compressed_image(
    f: MessageFactory,
    stamp_ns: int,
    frame_id: str,
    arr: np.ndarray,
    fmt: str = "jpeg",
    encoding: str = "rgb8",
    quality: int = 90,
) -> Any:
    """Array (channel order given by ``encoding``) -> ``sensor_msgs/msg/CompressedImage`` as image_transport does.

    ``fmt`` ``"jpeg"`` (8-bit, alpha dropped) or ``"png"`` (8- or 16-bit, lossless, alpha kept). The format
    string is ``"<encoding>; <fmt> compressed <bgr8|bgra8|mono8|mono16>"``.
    """
    codec = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}.get(str(fmt).lower())
    if codec is None:
        raise BagError(f"compressed format must be 'jpeg' or 'png', not {fmt!r}")
    enc = _norm_encoding(encoding)
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    layout = _LAYOUT.get(enc, "mono" if enc == "16UC1" else "")
    if enc not in ENCODINGS or layout not in ("rgb", "bgr", "rgba", "bgra", "mono"):
        raise BagError(f"cannot compress encoding {encoding!r}")
    if a.dtype == np.uint16 and codec == "png":
        if a.ndim != 2:
            raise BagError("16-bit compression supports one channel only")
        img, stored = a, "mono16"
    elif a.dtype == np.uint8:
        n = 1 if a.ndim == 2 else a.shape[2]
        if n != ENCODINGS[enc][1]:
            raise BagError(f"array of shape {a.shape} does not fit encoding {enc}")
        if layout == "mono":
            img, stored = a, "mono8"
        elif codec == "png" and n == 4:  # PNG keeps alpha
            img, stored = _to_channels(a, layout, "bgra"), "bgra8"
        else:
            img, stored = _to_channels(a, layout, "bgr"), "bgr8"
    else:
        raise BagError(f"cannot {codec}-compress a {a.dtype} array (jpeg needs uint8; png uint8 or uint16)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, out = cv2.imencode(".jpg" if codec == "jpeg" else ".png", np.ascontiguousarray(img), params)
    if not ok:
        raise BagError(f"OpenCV could not {codec}-encode an array of shape {a.shape}")
    return f.new(
        "sensor_msgs/msg/CompressedImage",
        header=header(f, stamp_ns, frame_id),
        format=f"{enc}; {codec} compressed {stored}",
        data=out.reshape(-1).astype(np.uint8, copy=False),
    )


def is_compressed(msg: Any) -> bool:
    """True for a ``CompressedImage`` (by ``__msgtype__`` or by its fields)."""
    mt = getattr(msg, "__msgtype__", "") or ""
    if mt:
        return mt.endswith("CompressedImage")
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def image_msg_to_rgb(msg: Any, *, bit_depth: int = 16) -> np.ndarray:
    """``Image`` or ``CompressedImage`` in any colour/mono encoding -> uint8 ``(H, W, 3)`` RGB.

    16-bit colour/mono (``mono16``, ``rgb16``, a 16-bit PNG) is reduced to the top 8 of its ``bit_depth``
    significant bits (16: its high byte; 10 for 10-bit data in a 16-bit container; 0: inferred per image from its
    largest value). Depth encodings (16UC1, 32FC1) raise :class:`BagError`; use :func:`image_msg_to_depth`.
    """
    if is_compressed(msg):
        return compressed_to_numpy(msg, want="rgb8", bit_depth=bit_depth)
    enc = _norm_encoding(msg.encoding)
    layout = _LAYOUT.get(enc)
    if layout is None:
        colour = ", ".join(sorted(_LAYOUT))
        raise BagError(
            f"image encoding {msg.encoding!r} is not a colour encoding (a depth image, 16UC1 or 32FC1, belongs on a "
            f"depth topic); colour encodings read: {colour}"
        )
    return np.ascontiguousarray(_to_channels(image_to_numpy(msg), layout, "rgb", bit_depth))


def image_msg_to_depth(msg: Any, *, depth_scale: float = 0.001) -> np.ndarray:
    """Depth ``Image`` (16UC1 mm, 32FC1 m) or ``compressedDepth`` -> float32 metres, NaN where invalid
    (0, the integer type's maximum, NaN)."""
    if is_compressed(msg):
        d = compressed_to_numpy(msg, want="passthrough")
    else:
        enc = _norm_encoding(msg.encoding)
        if enc not in ("16UC1", "mono16", "32FC1", "64FC1"):
            raise BagError(f"image encoding {msg.encoding!r} is not a depth encoding (16UC1 or 32FC1)")
        d = image_to_numpy(msg)
    if d.ndim != 2:
        raise BagError(f"depth image must have one channel, got shape {d.shape}")
    if d.dtype.kind in "ui":
        out = d.astype(np.float32) * np.float32(depth_scale)
        # 0: no measurement (REP-118); the type's maximum (65535): saturated / no return on many drivers
        out[(d == 0) | (d == np.iinfo(d.dtype).max)] = np.nan
        return out
    out = d.astype(np.float32)
    out[~np.isfinite(out) & ~np.isposinf(out)] = np.nan
    out[out <= 0] = np.nan
    return out

"""Image <-> NumPy conversions of pose2rgbd.messages.images (no cv_bridge)."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import BagError
from pose2rgbd.messages import (
    ENCODINGS,
    compressed_image,
    compressed_to_numpy,
    default_factory,
    get_typestore,
    image,
    image_msg_to_depth,
    image_msg_to_rgb,
    image_to_numpy,
)

RNG = np.random.default_rng(7)
F = default_factory()


def _random(enc: str, h: int = 5, w: int = 7) -> np.ndarray:
    kind, ch = ENCODINGS[enc]
    shape = (h, w) if ch == 1 else (h, w, ch)
    dt = np.dtype(kind)
    if dt.kind == "f":
        return RNG.uniform(-100, 100, shape).astype(dt)
    info = np.iinfo(dt)
    return RNG.integers(info.min, info.max, shape, endpoint=True).astype(dt)


def _serialize_roundtrip(msg):
    ts = get_typestore()
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.mark.parametrize("enc", sorted(ENCODINGS))
def test_image_roundtrip_every_encoding(enc: str) -> None:
    a = _random(enc)
    msg = image(F, 123, "cam", a, enc)
    assert msg.encoding == enc and msg.height == 5 and msg.width == 7
    assert msg.step == 7 * a.itemsize * ENCODINGS[enc][1]
    back = image_to_numpy(_serialize_roundtrip(msg))
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("alias,enc", [("8UC1", "mono8"), ("8UC3", "bgr8"), ("mono16", "16UC1")])
def test_aliases_give_same_pixels(alias: str, enc: str) -> None:
    a = _random(enc)
    np.testing.assert_array_equal(image_to_numpy(image(F, 0, "", a, alias)), a)


def _padded(a: np.ndarray, enc: str, pad: int, bigendian: bool):
    """Build an Image by hand with ``pad`` junk bytes per row and the given byte order."""
    h = a.shape[0]
    rowbytes = a[0].size * a.itemsize
    raw = a.astype(a.dtype.newbyteorder(">" if bigendian else "<")).reshape(h, -1).view(np.uint8).reshape(h, rowbytes)
    junk = np.full((h, pad), 0xAB, np.uint8)
    data = np.concatenate([raw, junk], axis=1).reshape(-1)
    msg = image(F, 0, "", a, enc)
    msg.step, msg.is_bigendian, msg.data = rowbytes + pad, int(bigendian), data
    return msg


@pytest.mark.parametrize("enc", ["rgb8", "mono8", "16UC1", "32FC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_step_padding_and_byte_order(enc: str, bigendian: bool) -> None:
    a = _random(enc, 4, 3)
    msg = _padded(a, enc, pad=5, bigendian=bigendian)
    np.testing.assert_array_equal(image_to_numpy(msg), a)
    # Last row without its padding is legal too.
    msg.data = msg.data[:-5]
    np.testing.assert_array_equal(image_to_numpy(msg), a)


def test_bigendian_32fc1_values() -> None:
    a = np.array([[1.5, -2.25], [np.inf, 1e-3]], np.float32)
    msg = image(F, 0, "", a, "32FC1")
    msg.is_bigendian = 1
    msg.data = a.astype(">f4").reshape(-1).view(np.uint8).copy()
    out = image_to_numpy(msg)
    assert out.dtype == np.float32 and out.dtype.byteorder in ("=", "<", "|")
    np.testing.assert_array_equal(out, a)
    # Interpreted little-endian it would be garbage: the flag matters.
    msg.is_bigendian = 0
    assert not np.array_equal(image_to_numpy(msg), a)


def test_clear_errors() -> None:
    msg = image(F, 0, "", _random("rgb8"), "rgb8")
    msg.encoding = "bayer_rggb12p"  # packed 12-bit: not read
    with pytest.raises(BagError, match="unsupported image encoding 'bayer_rggb12p'"):
        image_to_numpy(msg)
    msg = image(F, 0, "", _random("rgb8"), "rgb8")
    msg.data = msg.data[:-30]
    with pytest.raises(BagError, match="data has"):
        image_to_numpy(msg)
    msg = image(F, 0, "", _random("rgb8"), "rgb8")
    msg.step = 3
    with pytest.raises(BagError, match="step"):
        image_to_numpy(msg)
    with pytest.raises(BagError, match="does not fit"):
        image(F, 0, "", np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(BagError, match="does not fit"):
        image(F, 0, "", np.zeros((4, 4), np.float32), "16UC1")


def test_rclpy_style_data_accepted() -> None:
    """rclpy gives ``data`` as array.array('B') / bytes: must work the same."""
    import array

    a = _random("bgr8")
    msg = image(F, 0, "", a, "bgr8")
    msg.data = array.array("B", msg.data.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), a)
    msg.data = bytes(msg.data)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), a[..., ::-1])


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3"])
def test_png_exact_and_to_rgb(enc: str) -> None:
    a = _random(enc, 16, 12)
    msg = _serialize_roundtrip(compressed_image(F, 5, "cam", a, "png", enc))
    assert "png" in msg.format and msg.format.startswith(enc)
    # passthrough gives back the original array, channel order included
    np.testing.assert_array_equal(compressed_to_numpy(msg, want="passthrough"), a)
    rgb = image_msg_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 12, 3)
    np.testing.assert_array_equal(rgb, image_msg_to_rgb(image(F, 0, "", a, enc)))


def test_png_16bit_kept() -> None:
    a = _random("16UC1", 9, 11)
    msg = compressed_image(F, 0, "", a, "png", "16UC1")
    out = compressed_to_numpy(msg, want="passthrough")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, a)
    d = image_msg_to_depth(msg)
    np.testing.assert_allclose(d[a > 0], a[a > 0] * 1e-3, rtol=1e-6)
    assert np.isnan(d[a == 0]).all()


def test_jpeg_approximate() -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, 255 - xx * 3], -1).astype(np.uint8)  # smooth: jpeg-friendly
    msg = compressed_image(F, 0, "", rgb, "jpeg", "rgb8", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = image_msg_to_rgb(msg)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    # channel order really is handled: swapping R and B would be far off
    assert np.abs(out[..., ::-1].astype(int) - rgb).mean() > 30
    bgr = compressed_to_numpy(msg, want="bgr8")
    np.testing.assert_array_equal(bgr, out[..., ::-1])
    mono = compressed_to_numpy(compressed_image(F, 0, "", rgb[..., 0], "jpeg", "mono8"), want="rgb8")
    assert mono.shape == (48, 64, 3) and (mono[..., 0] == mono[..., 2]).all()


def test_image_msg_to_rgb_every_colour_encoding() -> None:
    rgb = _random("rgb8", 6, 4)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.full((6, 4, 1), 7, np.uint8)], -1),
        "bgra8": np.concatenate([rgb[..., ::-1], np.full((6, 4, 1), 7, np.uint8)], -1),
        "8UC3": rgb[..., ::-1],
    }
    for enc, arr in cases.items():
        np.testing.assert_array_equal(image_msg_to_rgb(image(F, 0, "", arr, enc)), rgb, err_msg=enc)
    mono = rgb[..., 1]
    for enc in ("mono8", "8UC1"):
        np.testing.assert_array_equal(image_msg_to_rgb(image(F, 0, "", mono, enc)), np.repeat(mono[..., None], 3, -1))
    np.testing.assert_array_equal(
        image_msg_to_rgb(image(F, 0, "", mono.astype(np.uint16) << 8, "mono16")), np.repeat(mono[..., None], 3, -1)
    )
    with pytest.raises(BagError, match="not a colour encoding"):
        image_msg_to_rgb(image(F, 0, "", np.zeros((2, 2), np.float32), "32FC1"))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_a_bayer_mosaic_is_demosaiced_by_its_pattern(pattern: str) -> None:
    """A colour camera's raw mosaic (bayer_rggb8 on a machine-vision camera's image_raw) had been refused as "not a
    colour encoding"; each of the four patterns, 8 and 16 bit, gives the colours of the scene it sampled."""
    h, w = 8, 10
    scene = np.empty((h, w, 3), np.uint8)
    scene[...] = (200, 100, 50)  # RGB
    where = {c: [(i // 2, i % 2) for i, ch in enumerate(pattern) if ch == c] for c in "rgb"}
    mosaic = np.zeros((h, w), np.uint8)
    for ch, k in (("r", 0), ("g", 1), ("b", 2)):
        for dy, dx in where[ch]:
            mosaic[dy::2, dx::2] = scene[dy::2, dx::2, k]
    for enc, data in ((f"bayer_{pattern}8", mosaic), (f"bayer_{pattern}16", mosaic.astype(np.uint16) << 8)):
        rgb = image_msg_to_rgb(image(F, 0, "", data, enc))
        assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8, enc
        np.testing.assert_array_equal(rgb[2:-2, 2:-2], scene[2:-2, 2:-2], err_msg=enc)  # inside the border


def test_depth_32fc1() -> None:
    d = np.array([[1.0, 0.0], [np.nan, np.inf]], np.float32)
    out = image_msg_to_depth(image(F, 0, "", d, "32FC1"))
    assert out[0, 0] == 1.0 and np.isnan(out[0, 1]) and np.isnan(out[1, 0]) and np.isposinf(out[1, 1])


def test_compressed_depth_16uc1() -> None:
    """image_transport compressedDepth = 12-byte header + 16-bit PNG."""
    import cv2

    d = _random("16UC1", 8, 8)
    ok, png = cv2.imencode(".png", d)
    assert ok
    hdr = np.concatenate([np.array([0], "<i4").view(np.uint8), np.zeros(8, np.uint8)])
    msg = compressed_image(F, 0, "", _random("mono8"), "png", "mono8")
    msg.format = "16UC1; compressedDepth png"
    msg.data = np.concatenate([hdr, png.reshape(-1)])
    np.testing.assert_array_equal(compressed_to_numpy(msg), d)


def test_corrupt_compressed_raises() -> None:
    msg = compressed_image(F, 0, "", _random("rgb8"), "png", "rgb8")
    msg.data = msg.data[:20]
    with pytest.raises(BagError, match="cannot decode CompressedImage"):
        image_msg_to_rgb(msg)

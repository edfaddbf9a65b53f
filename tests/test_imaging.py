"""decode_image on every hostile file a real photo pool holds; limit_short_side. Files are generated here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fairweather.imaging import ImageDecodeError, decode_image, limit_short_side

#: Generous limit for the hostile set; only ``huge.png`` exceeds it.
MAX_PIXELS = 5_000
H, W = 20, 30


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_rgb16(array: np.ndarray) -> bytes:
    """A 48-bit RGB PNG written by hand (PIL cannot write one): IHDR bit depth 16, colour type 2."""
    height, width, _ = array.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def smooth_rgb() -> np.ndarray:
    """An asymmetric ``(H, W, 3)`` gradient: survives JPEG, and every rotation or flip of it looks different."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack(
        [x * 255 // (W - 1), y * 255 // (H - 1), (x * y) * 255 // ((W - 1) * (H - 1))], -1
    ).astype(np.uint8)


def hostile_files(seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, expected) with expected ``"ok"`` or the ImageDecodeError reason.

    Every ``ok`` file decodes to ``(H, W, 3)`` except ``exif_rotated.jpg`` (EXIF orientation 6: ``(W, H, 3)``).
    """
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    png = _encode(Image.fromarray(rgb), "PNG")
    jpeg = _encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    rgba = np.dstack([rgb, rng.integers(0, 256, (H, W), dtype=np.uint8)])
    rotated = Image.fromarray(smooth_rgb())
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    return {
        "zero_byte.png": (b"", "empty"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "text.png": (b"this is not an image, just text\n", "not_an_image"),
        "huge.png": (_encode(Image.new("RGB", (100, 100)), "PNG"), "too_large"),
        "bmp_named.jpg": (_encode(Image.fromarray(rgb), "BMP"), "ok"),
        "gray16.png": (
            _encode(Image.fromarray(rng.integers(0, 65536, (H, W)).astype(np.uint16)), "PNG"),
            "ok",
        ),
        "rgb48.png": (_png_rgb16(rng.integers(0, 65536, (H, W, 3)).astype(np.uint16)), "ok"),
        "rgba.png": (_encode(Image.fromarray(rgba, "RGBA"), "PNG"), "ok"),
        "cmyk.jpg": (_encode(Image.fromarray(smooth_rgb()).convert("CMYK"), "JPEG", quality=95), "ok"),
        "gray.jpg": (_encode(Image.fromarray(rgb).convert("L"), "JPEG"), "ok"),
        "lzw.tif": (_encode(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"), "ok"),
        "packbits.tif": (_encode(Image.fromarray(rgb), "TIFF", compression="packbits"), "ok"),
        "exif_rotated.jpg": (_encode(rotated, "JPEG", quality=95, exif=exif.tobytes()), "ok"),
    }


HOSTILE = hostile_files()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_decodes_or_names_its_reason(name):
    data, expected = HOSTILE[name]
    if expected != "ok":
        with pytest.raises(ImageDecodeError) as info:
            decode_image(data, max_pixels=MAX_PIXELS)
        assert info.value.reason == expected
        return
    out = decode_image(data, max_pixels=MAX_PIXELS)
    assert out.dtype == np.uint8
    assert out.shape == ((W, H, 3) if name == "exif_rotated.jpg" else (H, W, 3))


def test_lossless_formats_keep_exact_pixels():
    source = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for name in ("bmp_named.jpg", "lzw.tif", "packbits.tif"):
        np.testing.assert_array_equal(decode_image(HOSTILE[name][0], max_pixels=MAX_PIXELS), source)


def test_16_bit_images_are_scaled_not_clipped():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 65536, (H, W)).astype(np.uint16)
    out = decode_image(_encode(Image.fromarray(gray), "PNG"), max_pixels=MAX_PIXELS)
    assert np.abs(out[..., 0].astype(int) - gray / 257).max() <= 1  # full 16-bit range -> full 8-bit range
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    rgb48 = rng.integers(0, 65536, (H, W, 3)).astype(np.uint16)
    np.testing.assert_array_equal(decode_image(_png_rgb16(rgb48), max_pixels=MAX_PIXELS), rgb48 >> 8)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    rgba[0, 0] = (10, 20, 30, 255)  # one opaque pixel keeps its colour
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=MAX_PIXELS)
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [10, 20, 30]


def test_cmyk_and_exif_keep_the_picture():
    source = smooth_rgb()
    cmyk = decode_image(HOSTILE["cmyk.jpg"][0], max_pixels=MAX_PIXELS)
    assert np.abs(cmyk.astype(int) - source).mean() < 8  # JPEG-lossy, but not inverted or channel-swapped
    rotated = decode_image(HOSTILE["exif_rotated.jpg"][0], max_pixels=MAX_PIXELS)
    expected = np.rot90(source, k=-1)  # orientation 6: the stored image is shown turned 90° clockwise
    assert np.abs(rotated.astype(int) - expected).mean() < 8
    assert np.abs(rotated.astype(int) - np.rot90(source, k=1)).mean() > 40  # not the other way round


def test_pixel_limit_is_checked_before_decoding():
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageDecodeError, match=r"10000 pixels exceed data\.max_image_pixels=9999"):
        decode_image(data, max_pixels=9_999)
    with pytest.raises(ImageDecodeError, match=r"10000 pixels exceed data\.max_image_pixels=1000"):
        decode_image(data, max_pixels=1_000)  # over twice the limit: Pillow's own check fires first


def _png_without_pixels(width: int, height: int) -> bytes:
    """A PNG claiming ``width x height`` with an empty IDAT: a cheap stand-in for a huge photo's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_configured_pixel_limit_above_pillows_own_governs():
    header = _png_without_pixels(20_000, 10_000)  # 200 Mpx: above Pillow's default bomb limit (~179 Mpx)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(header, max_pixels=300_000_000)
    assert info.value.reason != "too_large"  # it got past the size check; it fails only for lack of pixels
    with pytest.raises(ImageDecodeError, match=r"data\.max_image_pixels=100000000"):
        decode_image(header, max_pixels=100_000_000)


def test_limit_short_side_downscales_only():
    tall = np.zeros((1000, 500, 3), dtype=np.uint8)
    assert limit_short_side(tall, 336).shape == (672, 336, 3)
    small = np.zeros((10, 20, 3), dtype=np.uint8)
    assert limit_short_side(small, 336) is small
    assert limit_short_side(tall, 0) is tall
    with pytest.raises(ValueError, match="short_side"):
        limit_short_side(tall, -1)

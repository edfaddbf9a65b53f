"""Results keep their original's EXIF bytes (UTF-8 text included) and its JPEG chroma subsampling (4:4:0 too)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from fairweather.imaging import ORIENTATION_TAG, encode_jpeg, exif_upright, jpeg_sampling
from fairweather.stages.restore.files import encode_like

COPYRIGHT_TAG = 0x8298
COPYRIGHT = "© 2024 Zoë Weather-Photographer"
SAMPLING_440 = ((1, 2), (1, 1), (1, 1))


def exif_block(orientation: int | None, order: str = "<") -> bytes:
    """A raw EXIF block written by hand, as a camera or editor writes it: IFD0 with Orientation (SHORT) and a
    Copyright ASCII field holding UTF-8 bytes (what Pillow's own writer turns into '??')."""
    text = COPYRIGHT.encode("utf-8") + b"\x00"
    entries = (
        [] if orientation is None else [(ORIENTATION_TAG, 3, 1, struct.pack(order + "HH", orientation, 0))]
    )
    count = len(entries) + 1
    data_at = 8 + 2 + 12 * count + 4
    entries.append((COPYRIGHT_TAG, 2, len(text), struct.pack(order + "I", data_at)))
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    ifd = struct.pack(order + "H", count) + b"".join(
        struct.pack(order + "HHI", t, k, n) + v for t, k, n, v in entries
    )
    return b"Exif\x00\x00" + head + ifd + struct.pack(order + "I", 0) + text


def with_app1(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with an APP1 EXIF segment right after SOI (how cameras store it)."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)


def jpeg_440(rgb: np.ndarray) -> bytes:
    """A 4:4:0 JPEG (luma 1x2: a 4:2:2 photo turned by 90°), which Pillow cannot write: OpenCV's encoder."""
    cv2 = pytest.importorskip("cv2")
    ok, data = cv2.imencode(
        ".jpg",
        np.ascontiguousarray(rgb[..., ::-1]),
        [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, 0x121111],
    )
    assert ok
    return data.tobytes()


def copyright_of(image: Image.Image) -> str:
    value = image.getexif()[COPYRIGHT_TAG]
    # Pillow decodes ASCII fields as Latin-1 where they are not ASCII: undo that to see the stored bytes.
    return value.encode("latin-1").decode("utf-8") if isinstance(value, str) else value.decode("utf-8")


def test_a_440_jpeg_with_a_utf8_copyright_is_written_back_440_with_the_same_exif_bytes():
    rgb = photo()
    original = with_app1(jpeg_440(rgb), exif_block(orientation=1))
    source = Image.open(io.BytesIO(original))
    assert jpeg_sampling(source) == SAMPLING_440
    result = Image.open(io.BytesIO(encode_like(rgb, original)[0]))
    assert result.format == "JPEG" and jpeg_sampling(result) == SAMPLING_440
    assert result.info["exif"] == source.info["exif"]  # byte for byte
    assert copyright_of(result) == COPYRIGHT and "??" not in copyright_of(result)
    assert np.abs(np.asarray(result, np.int16) - rgb).mean() < 3


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_pillow_samplings_are_kept_and_only_the_orientation_changes(subsampling):
    rgb = photo()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(
        buffer, "JPEG", quality=90, subsampling=subsampling, exif=exif_block(orientation=6)
    )
    original = buffer.getvalue()
    before = Image.open(io.BytesIO(original))
    result = Image.open(io.BytesIO(encode_like(rgb, original)[0]))
    assert jpeg_sampling(result) == jpeg_sampling(before)
    assert result.getexif()[ORIENTATION_TAG] == 1 and copyright_of(result) == COPYRIGHT
    changed = [
        i for i, (a, b) in enumerate(zip(result.info["exif"], before.info["exif"], strict=True)) if a != b
    ]
    assert (
        len(result.info["exif"]) == len(before.info["exif"]) and len(changed) == 1
    )  # the orientation's low byte


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_upright_patches_two_bytes_in_either_byte_order(order):
    block = exif_block(orientation=8, order=order)
    patched = exif_upright(block)
    assert len(patched) == len(block) and sum(a != b for a, b in zip(patched, block, strict=True)) == 1
    assert exif_upright(patched) == patched
    assert exif_upright(exif_block(orientation=None, order=order)) == exif_block(
        orientation=None, order=order
    )
    assert exif_upright(block[6:]) == patched[6:]  # without the Exif header (PNG eXIf, WebP)
    assert exif_upright(b"Exif\x00\x00garbage") is None and exif_upright(block[:20]) is None


def test_png_keeps_utf8_exif_and_unwritable_samplings_fall_back_to_444():
    rgb = photo(16, 24)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", exif=exif_block(orientation=3))
    result = Image.open(io.BytesIO(encode_like(rgb, buffer.getvalue())[0]))
    assert result.format == "PNG" and copyright_of(result) == COPYRIGHT
    assert result.getexif()[ORIENTATION_TAG] == 1
    odd = Image.open(io.BytesIO(encode_jpeg(rgb, quality=95, sampling=((1, 4), (1, 1), (1, 1)))))
    assert jpeg_sampling(odd) == ((1, 1), (1, 1), (1, 1))  # no setting for it: no chroma resolution lost


def test_a_format_written_as_png_says_so_in_its_suffix():
    rgb = photo(16, 24)
    for fmt, suffix in (("GIF", ".png"), ("PNG", None), ("JPEG", None), ("BMP", None)):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, fmt)
        data, added = encode_like(rgb, buffer.getvalue())
        assert added == suffix and Image.open(io.BytesIO(data)).format == ("PNG" if fmt == "GIF" else fmt)

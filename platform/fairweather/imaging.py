"""Decoding untrusted image files into RGB arrays, with one clear reason for every file that cannot be used.

Real photo pools hold every kind of oddity: truncated or empty files, text files named ``.png``, a BMP named ``.jpg``,
16-bit PNGs, RGBA, CMYK JPEGs, grayscale, LZW/PackBits TIFFs, EXIF-rotated JPEGs and decompression bombs. Each is
either converted to 8-bit RGB with its EXIF orientation applied, or rejected with an :class:`ImageDecodeError`.
The container format is sniffed from the bytes, never trusted from the file name.

Writing results back like their originals (``fairweather restore``): :func:`exif_upright` keeps a file's EXIF block
byte for byte (a UTF-8 copyright stays UTF-8) with only its orientation set to upright, and :func:`encode_jpeg`
writes the original's chroma subsampling, including the ones Pillow's encoder has no setting for (4:4:0, 4:1:1).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fairweather.contracts.io import read_bytes


class ImageDecodeError(ValueError):
    """A file is not a usable image; ``reason`` is a short machine-friendly tag, the message explains."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


def _to_uint8(image: Image.Image) -> Image.Image:
    """Bring 16-bit/32-bit/float single-channel images into 8 bits before the RGB conversion (PIL clips otherwise)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale + 0.5, 0, 255).astype(np.uint8), mode="L")
    return image


def _too_large(pixels: str, max_pixels: int) -> ImageDecodeError:
    return ImageDecodeError("too_large", f"{pixels} pixels exceed data.max_image_pixels={max_pixels}")


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` uint8 RGB with EXIF orientation applied.

    Raises :class:`ImageDecodeError` with reason ``empty``, ``not_an_image``, ``too_large``, ``truncated`` or
    ``corrupt``. ``max_pixels`` (``data.max_image_pixels``) guards against decompression bombs before any pixel
    is decoded, and it governs: Pillow's own process-wide limit is set to it, so a limit above Pillow's default
    (about 179 Mpx) takes effect and a bomb is reported against the configured key.
    """
    if not data:
        raise ImageDecodeError("empty", "zero-byte file")
    # Pillow raises in Image.open above 2 x MAX_IMAGE_PIXELS. Every decode in this package passes the one
    # configured limit, so setting the global here cannot make two callers disagree.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # PIL warns between its limit and 2x it; our own check below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise _too_large(f"{width}x{height} = {width * height}", max_pixels)
            image.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:  # above 2 x max_pixels: Pillow refused before we saw the size
        size = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large(size[1] if size else "over twice the limit's", max_pixels) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError("not_an_image", "bytes are not a known image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "corrupt"
        raise ImageDecodeError(reason, str(err) or type(err).__name__) from err
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated/multi-page files: the first frame is the photo
    image = ImageOps.exif_transpose(image)
    image = _to_uint8(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white, as a viewer shows it, rather than keeping undefined colour values.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError("corrupt", f"decoded to an unusable array of shape {rgb.shape}")
    return rgb


def limit_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """Downscale ``(H, W, 3)`` uint8 RGB so that ``min(H, W) <= short_side``, keeping the aspect ratio.

    Never upscales; ``short_side=0`` returns the array unchanged. Uses PIL's antialiased bicubic filter, as the
    models' own image processors do, so a later resize to the same short side sees nearly the same pixels.
    """
    if short_side < 0:
        raise ValueError(f"short_side must be >= 0, got {short_side}")
    height, width = rgb.shape[:2]
    if short_side == 0 or min(height, width) <= short_side:
        return rgb
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def read_image_file(uri: str | Path, *, max_pixels: int) -> np.ndarray:
    """Read and decode a local file or URI (see :func:`decode_image`)."""
    return decode_image(read_bytes(str(uri)), max_pixels=max_pixels)


#: EXIF tag of the orientation (the rotation/flip a viewer applies).
ORIENTATION_TAG = 0x0112
#: The orientations that turn the image a quarter (transpose, 90° / 270°, transverse): decoding swaps its sides.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_EXIF_HEADER = b"Exif\x00\x00"


def upright_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as :func:`decode_image` returns it (its EXIF orientation applied),
    from the header alone: a listing compares pairs' sizes without decoding a pixel."""
    width, height = image.size
    if image.getexif().get(ORIENTATION_TAG) in _QUARTER_TURNS:
        return height, width
    return width, height


def exif_upright(block: bytes) -> bytes | None:
    """``block`` (a file's raw EXIF: a TIFF structure, with or without the ``Exif\\0\\0`` header) with its orientation
    set to 1 (upright) and every other byte as it was; None if the block is not a TIFF structure this can patch.

    Pixels are written upright (decoding applied the orientation), so a viewer must not rotate them again. Patching
    two bytes instead of re-serialising keeps every other field as the camera or editor wrote it: Pillow's
    ``Exif.tobytes()`` writes ASCII fields as ASCII and turns a UTF-8 "©" into "??".
    """
    start = len(_EXIF_HEADER) if block.startswith(_EXIF_HEADER) else 0
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(block[start : start + 4])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", block, start + 4)
        (count,) = struct.unpack_from(order + "H", block, start + ifd)
        for entry in range(count):
            at = start + ifd + 2 + 12 * entry
            tag, kind, n = struct.unpack_from(order + "HHI", block, at)
            if tag == ORIENTATION_TAG:
                if kind != 3 or n != 1:  # not the one SHORT the standard defines
                    return None
                patched = bytearray(block)
                struct.pack_into(order + "H", patched, at + 8, 1)
                return bytes(patched)
    except struct.error:  # offsets past the end: a damaged block
        return None
    return block


#: ``(luma (h, v), chroma (h, v), chroma (h, v))`` sampling factors -> Pillow's ``subsampling`` code.
_PILLOW_SAMPLINGS = {((1, 1), (1, 1), (1, 1)): 0, ((2, 1), (1, 1), (1, 1)): 1, ((2, 2), (1, 1), (1, 1)): 2}
#: Samplings Pillow cannot write, which OpenCV's encoder can: 4:4:0 (a 4:2:2 photo turned by 90°) and 4:1:1.
_OPENCV_SAMPLINGS = {((1, 2), (1, 1), (1, 1)): 0x121111, ((4, 1), (1, 1), (1, 1)): 0x411111}


def jpeg_sampling(image: Image.Image) -> tuple[tuple[int, int], ...] | None:
    """The ``(horizontal, vertical)`` sampling factors of each component of a 3-component JPEG, else None."""
    layers = getattr(image, "layer", None)
    if image.format not in ("JPEG", "MPO") or not layers or len(layers) != 3:
        return None
    return tuple((int(h), int(v)) for _, h, v, _ in layers)


def _segments(jpeg: bytes) -> tuple[list[bytes], bytes]:
    """A JPEG's marker segments before its first scan (SOI excluded), and the bytes from the scan on."""
    at, segments = 2, []
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF and jpeg[at + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", jpeg, at + 2)
        segments.append(jpeg[at : at + 2 + length])
        at += 2 + length
    return segments, jpeg[at:]


def encode_jpeg(
    rgb: np.ndarray, *, quality: int, sampling: tuple[tuple[int, int], ...] | None = None, **options: object
) -> bytes:
    """``(H, W, 3)`` uint8 RGB as JPEG at ``quality`` with the chroma ``sampling`` of :func:`jpeg_sampling`
    (None: Pillow's default, 4:2:0) and Pillow's save ``options`` (``exif``, ``icc_profile``, ``dpi``).

    Pillow writes 4:4:4, 4:2:2 and 4:2:0. 4:4:0 and 4:1:1 are encoded by OpenCV (a dependency of pyiqa) and given
    the metadata segments (APPn: JFIF/DPI, EXIF, ICC) Pillow writes for the same options. Any other sampling, or
    no OpenCV, is written 4:4:4: no chroma resolution is lost.
    """
    image = Image.fromarray(rgb, mode="RGB")
    code = _PILLOW_SAMPLINGS.get(sampling) if sampling is not None else -1
    factor = _OPENCV_SAMPLINGS.get(sampling) if sampling is not None else None
    if code is None and factor is not None:
        try:
            import cv2
        except ImportError:
            factor = None
        else:
            ok, data = cv2.imencode(
                ".jpg",
                np.ascontiguousarray(rgb[..., ::-1]),
                [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor],
            )
            if ok:
                header = io.BytesIO()
                Image.new("RGB", (1, 1)).save(header, format="JPEG", **options)
                ours, _ = _segments(header.getvalue())
                theirs, scan = _segments(data.tobytes())
                keep = [s for s in theirs if not 0xE0 <= s[1] <= 0xEF]  # OpenCV's own APP0 is replaced
                return b"\xff\xd8" + b"".join([s for s in ours if 0xE0 <= s[1] <= 0xEF] + keep) + scan
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0 if code is None else code, **options)
    return buffer.getvalue()


def image_grid(rows: Sequence[Sequence[np.ndarray]], cell: int = 128) -> bytes:
    """PNG of a grid: one line per example (input | restored | target or pseudo-label), each cell ``cell`` px high."""
    lines = []
    width = 0
    for images in rows:
        scaled = [
            np.asarray(Image.fromarray(im).resize((max(1, im.shape[1] * cell // im.shape[0]), cell)))
            for im in images
        ]
        line = np.concatenate(scaled, axis=1)
        lines.append(line)
        width = max(width, line.shape[1])
    canvas = np.zeros((cell * max(1, len(lines)), max(width, 1), 3), np.uint8)
    for i, line in enumerate(lines):
        canvas[i * cell : (i + 1) * cell, : line.shape[1]] = line
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()

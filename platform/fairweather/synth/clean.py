"""Clean photos for the real-photo synth path: decode a list of sources, refuse the unusable ones with a reason.

The caller lists the source (folder, glob or manifest, by the pool's listing rules) and passes the files here as
paths/URIs, or as ``(name, bytes)`` for photos already in memory. ``bundled`` names the permissively licensed
photos shipped in ``fairweather/synth/assets/clean`` (:func:`bundled_clean_photos`; sources and licences in its
``SOURCES.csv``), so the smoke profile and the tests need no network.

Bad input, each an error row (:class:`CleanPhotoError`, written to the ``errors`` table by the stage) while the
rest is used:

* unreadable (``unreadable``: the file cannot be read) or not decodable (:func:`fairweather.imaging.decode_image`'s
  reasons: ``empty``, ``not_an_image``, ``truncated``, ``corrupt``, ``too_large``);
* smaller than the crop in either dimension (``too_small``): never upscaled, an upscaled target would teach blur;
* byte-identical to an earlier source (``duplicate``): one photo in two splits would leak the test set.

Grayscale, CMYK, palette, RGBA and 16-bit files are **converted** to 8-bit RGB (grayscale to three equal
channels, CMYK through Pillow's conversion, 16-bit scaled by 255/65535, transparency composited on white) and
used; the original mode is kept in :attr:`CleanPhoto.converted_from` and recorded with the pairs.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from fairweather.contracts.io import read_bytes
from fairweather.contracts.schemas import ERRORS
from fairweather.contracts.tables import conform
from fairweather.imaging import ImageDecodeError, decode_image, limit_short_side

#: ``synth.clean`` value naming the photos shipped with the package.
BUNDLED = "bundled"
#: Where the bundled photos live inside the package, with SOURCES.csv and README.md (licences).
BUNDLED_FOLDER = ("synth", "assets", "clean")

#: A source: a local path or URI, or ``(name, bytes)`` for a photo already in memory.
CleanSource = str | Path | tuple[str, bytes]


@dataclass(frozen=True)
class CleanPhoto:
    """A usable clean photo: 8-bit RGB, its short side limited to the largest working resolution."""

    source: str  # the path / URI / name it came from, as given
    sha256: str  # of the file bytes: the photo's identity (split assignment, de-duplication)
    image: np.ndarray  # (H, W, 3) uint8
    width: int  # of the decoded file, before any downscaling
    height: int
    converted_from: str | None  # the file's Pillow mode when it was not 8-bit RGB (L, CMYK, I;16, RGBA, ...)


@dataclass(frozen=True)
class CleanPhotoError:
    """A source that was not used: its name, a short reason tag, and the explanation."""

    uri: str
    reason: str
    message: str


def bundled_clean_photos() -> list[tuple[str, bytes]]:
    """The photos shipped in ``fairweather/synth/assets/clean`` as ``("bundled:<file name>", bytes)``, sorted by name
    (the name, not the install path, is recorded: the same on every machine)."""
    folder = resources.files("fairweather").joinpath(*BUNDLED_FOLDER)
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.lower().endswith((".jpg", ".png"))),
        key=lambda e: e.name,
    )
    return [(f"{BUNDLED}:{entry.name}", entry.read_bytes()) for entry in entries]


def _source_bytes(source: CleanSource) -> tuple[str, bytes]:
    if isinstance(source, tuple):
        name, data = source
        return str(name), bytes(data)
    return str(source), read_bytes(str(source))


def _file_mode(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.mode
    except Exception:  # decode_image has already accepted the bytes; the mode is only recorded
        return "?"


def load_clean_photos(
    sources: Iterable[CleanSource], *, min_size: tuple[int, int], max_short_side: int, max_pixels: int
) -> tuple[list[CleanPhoto], list[CleanPhotoError]]:
    """Decode every source; ``(usable photos sorted by sha256, error rows in source order)``.

    min_size: ``(height, width)`` of the crop; a smaller photo is ``too_small``. max_short_side: larger photos are
    downscaled (antialiased) to this short side once, here, so that memory does not grow with the source's
    resolution. max_pixels: ``data.max_image_pixels`` (decompression bombs).
    """
    photos: dict[str, CleanPhoto] = {}
    errors: list[CleanPhotoError] = []
    min_h, min_w = min_size
    for source in sources:
        name = source[0] if isinstance(source, tuple) else str(source)
        try:
            name, data = _source_bytes(source)
        except OSError as err:
            errors.append(CleanPhotoError(name, "unreadable", f"{type(err).__name__}: {err}"))
            continue
        try:
            rgb = decode_image(data, max_pixels=max_pixels)
        except ImageDecodeError as err:
            errors.append(CleanPhotoError(name, err.reason, str(err)))
            continue
        height, width = rgb.shape[:2]
        if height < min_h or width < min_w:
            errors.append(
                CleanPhotoError(
                    name,
                    "too_small",
                    f"{width}x{height} is smaller than the {min_w}x{min_h} crop (never upscaled)",
                )
            )
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in photos:
            errors.append(CleanPhotoError(name, "duplicate", f"same bytes as {photos[digest].source}"))
            continue
        mode = _file_mode(data)
        image = limit_short_side(rgb, max(max_short_side, min_h, min_w))
        photos[digest] = CleanPhoto(name, digest, image, width, height, None if mode == "RGB" else mode)
    return [photos[digest] for digest in sorted(photos)], errors


def errors_table(
    errors: Sequence[CleanPhotoError], *, stage: str = "synth", time: datetime | None = None
) -> pa.Table:
    """The error rows as an ``errors`` table (``error_type`` = the reason tag)."""
    now = time or datetime.now(timezone.utc)
    table = pa.table(
        {
            "uri": [e.uri for e in errors],
            "stage": [stage] * len(errors),
            "error_type": [e.reason for e in errors],
            "message": [e.message for e in errors],
            "time": pa.array([now] * len(errors), pa.timestamp("us", tz="UTC")),
        }
    )
    return conform(ERRORS, table)

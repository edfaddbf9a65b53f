"""The files of ``fairweather restore``: what to read, where each result goes, and how it is written back.

Inputs are listed with the labeling stage's rules (:func:`fairweather.stages.infra.pool.list_pool`: image suffixes,
no link loops, every skipped entry reported). Each result keeps its file's relative path and name under the
output folder, and a run never writes where an input lives: an output folder equal to or inside the input
folder, or any result path that would land on an input, is refused before anything is written.

Results are written in the input's real format (sniffed from the bytes; a phone's MPO is a JPEG): PNG, TIFF
and BMP losslessly, JPEG and WebP at quality 95; any other format (a GIF, ICO, ... under an image suffix) as PNG,
its name followed by ``.png`` unless it ends so (``x.jpg`` -> ``x.jpg.png``: the name says the format and never
meets another input's result). A JPEG keeps its chroma subsampling, 4:4:0 and 4:1:1 included
(:func:`fairweather.imaging.encode_jpeg`). Pixels are written upright: decoding applies the EXIF orientation, so the
result keeps the input's EXIF block byte for byte (UTF-8 text such as a "©" copyright stays as written) except the
orientation, set to 1 = upright (a viewer would otherwise rotate the upright pixels a second time); a block that
cannot be patched in place is rewritten by Pillow without the orientation tag. ICC profile and DPI are kept.
Results are 8-bit RGB: 16-bit inputs are written in 8 bits and transparency is flattened onto white, as decoding
does for every stage.
"""

from __future__ import annotations

import io
import os
import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow.fs as pafs
from PIL import Image

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import filesystem_for, full_uri
from fairweather.imaging import ORIENTATION_TAG, encode_jpeg, exif_upright, jpeg_sampling
from fairweather.stages.infra.pool import PoolError, list_pool

#: Quality of lossy results: visually lossless for restored photos, ~2x the bytes of quality 75.
LOSSY_QUALITY = 95
#: Formats written back as they are; anything else that decodes (GIF, ICO, ...) is written as PNG.
WRITABLE = {"JPEG", "PNG", "TIFF", "WEBP", "BMP"}
#: TIFF compressions Pillow can write back as they were read.
TIFF_COMPRESSIONS = {"tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}


class OverwriteError(FairweatherError):
    """The output would overwrite or land among the inputs."""


@dataclass
class RestorePlan:
    """Every listed file with its result path, and what the listing did not take (reason -> entries)."""

    jobs: list[tuple[str, str]]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    bad_names: list[str] = field(default_factory=list)

    @property
    def listed(self) -> int:
        return len(self.jobs) + len(self.bad_names)


def _real(uri: str) -> str:
    """The path of ``uri`` with links resolved (local files); object-store keys as they are."""
    fs, path = filesystem_for(uri)
    return os.path.realpath(path) if isinstance(fs, pafs.LocalFileSystem) else path.rstrip("/")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan_restore(source: str, output: str, *, follow_links_out: bool = False) -> RestorePlan:
    """The files of ``source`` (a folder, listed recursively, or one image file) and their paths under ``output``.

    Raises :class:`OverwriteError` when a result would land on or among the inputs, and
    :class:`fairweather.stages.infra.pool.PoolError` when ``source`` does not exist or lists no image.
    """
    fs, path = filesystem_for(source)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        raise PoolError(f"input {source!r} does not exist")
    in_real, out_real = _real(source), _real(output)
    if kind == pafs.FileType.File:
        target = f"{output.rstrip('/')}/{posixpath.basename(path)}"
        if _real(target) == in_real:
            raise OverwriteError(f"refusing to overwrite the input: {source} would be written to {target}")
        return RestorePlan(jobs=[(source, target)])
    if _inside(out_real, in_real):
        raise OverwriteError(
            f"refusing to write into the input folder: output {output!r} is "
            f"{'the input folder' if out_real == in_real else 'inside the input folder'} {source!r}"
        )
    listing = list_pool(source, follow_links_out=follow_links_out, what="--input")
    jobs = []
    for item in listing.items:
        uri = str(item["uri"])
        # The listed name, not its resolved path: a followed link keeps its own name under the output.
        relative = posixpath.relpath(uri.partition("://")[2] or uri, path)
        jobs.append((uri, full_uri(output, f"{out_real}/{relative}")))
    landing = [target for _, target in jobs if _inside(_real(target), in_real)]
    if landing:
        # Only when the input folder lies inside the output folder: nested names could reach back into it.
        raise OverwriteError(
            f"refusing to write among the inputs: {len(landing)} results would land inside the input folder "
            f"{source!r} (first: {landing[0]}); choose an output folder outside it"
        )
    return RestorePlan(jobs, listing.skipped, listing.bad_names)


def output_format(image: Image.Image) -> str:
    """The Pillow format of a result: the input's real format where writable, else PNG."""
    found = "JPEG" if image.format == "MPO" else image.format
    return found if found in WRITABLE else "PNG"


def encode_like(rgb: np.ndarray, original: bytes) -> tuple[bytes, str | None]:
    """Encode ``(H, W, 3)`` uint8 upright RGB in the format and with the metadata of the file ``original``; with
    the suffix its result's name takes on (``.png`` for a GIF, ICO, ... written as PNG), else None.

    See the module docstring for what is kept and why.
    """
    with Image.open(io.BytesIO(original)) as source:
        fmt = output_format(source)
        suffix = ".png" if fmt == "PNG" and source.format != "PNG" else None
        exif = _upright_exif(source) if fmt in ("JPEG", "PNG", "WEBP") else None
        icc, dpi = source.info.get("icc_profile"), source.info.get("dpi")
        compression = source.info.get("compression")
        sampling = jpeg_sampling(source) if fmt == "JPEG" else None
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if dpi:
        options["dpi"] = dpi
    if exif:  # TIFF's "EXIF" is the file's own structure (strips, sizes): never copied onto a new TIFF
        options["exif"] = exif
    if fmt == "JPEG":
        return encode_jpeg(rgb, quality=LOSSY_QUALITY, sampling=sampling, **options), suffix
    if fmt == "WEBP":
        options["quality"] = LOSSY_QUALITY
    if fmt == "TIFF" and compression in TIFF_COMPRESSIONS:
        options["compression"] = compression
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format=fmt, **options)
    return buffer.getvalue(), suffix


def result_path(target: str, suffix: str | None) -> str:
    """Where a result goes: ``target``, followed by the ``suffix`` :func:`encode_like` gave where the name does
    not already say the format written (``x.jpg`` holding a GIF -> ``x.jpg.png``, ``x.png`` holding one -> itself)."""
    return target + suffix if suffix and not target.lower().endswith(suffix) else target


def _upright_exif(source: Image.Image) -> bytes | None:
    """The file's EXIF block with the orientation set upright, bytes otherwise unchanged; None without EXIF.

    A block :func:`fairweather.imaging.exif_upright` cannot patch is re-serialised by Pillow without the tag.
    """
    raw = source.info.get("exif")
    if raw:
        patched = exif_upright(raw)
        if patched is not None:
            return patched
    exif = source.getexif()
    exif.pop(ORIENTATION_TAG, None)
    return exif.tobytes() if len(exif) else None

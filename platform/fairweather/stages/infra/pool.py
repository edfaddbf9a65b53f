"""The labeling job's inputs: list a pool of image URIs, then read + hash + decode them in Ray Data tasks.

A pool is a folder, a glob (``data/**/*.jpg``) or a manifest (``.txt`` one URI per line; ``.csv``/``.parquet``
with a ``uri`` column and an optional ``weather``/``weather_hint`` column), on local disk or any pyarrow
filesystem (``s3://``, ``gs://``, ``file://``), listed under :mod:`fairweather.contracts.io`'s rules (no link
loops, nothing skipped silently). Only URIs are listed on the driver; bytes are read in the workers.
:func:`read_decode_batch` turns every URI into exactly one row: ``ok`` (pixels attached), ``skipped`` (already
labeled) or ``failed`` (with the reason), so that no file can vanish between listing and the tables.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import (
    filesystem_for,
    full_uri,
    is_glob,
    list_files,
    list_glob,
    read_bytes,
    within_roots,
)
from fairweather.contracts.vocab import HINT_FOLDERS, IMAGE_SUFFIXES
from fairweather.imaging import ImageDecodeError, decode_image, limit_short_side

log = logging.getLogger(__name__)

_MANIFEST_SUFFIXES = (".txt", ".csv", ".parquet")
#: The index a pool folder may hold at its top (``fairweather synth`` writes one): never a skipped file.
POOL_MANIFEST = "manifest.parquet"
#: Skipped entries named per reason in the log (all of them go to the run's ``listing_skipped.csv``).
_NAMED_SKIPS = 5

#: One row per listed file after the read/decode stage. ``pixels`` is ``(pixel_height, pixel_width, 3)`` uint8
#: RGB as raw bytes (empty unless ``status == "ok"``); width/height are the decoded size before any downscale.
ITEM_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("weather_hint", pa.string()),
        ("status", pa.string()),  # ok | skipped | failed
        ("image_id", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bytes", pa.int64()),
        ("pixels", pa.binary()),
        ("pixel_height", pa.int32()),
        ("pixel_width", pa.int32()),
        ("error_stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ]
)

#: One row per listed file after the actor stage (the pixels are dropped, the label fields added).
RESULT_SCHEMA = pa.schema(
    [ITEM_SCHEMA.field(n) for n in ITEM_SCHEMA.names if not n.startswith("pixel")]
    + [
        ("probs", pa.list_(pa.float64())),
        ("rating_complete", pa.bool_()),
        ("r_vlm", pa.float64()),
        ("vlm_vis", pa.float64()),
        ("description", pa.string()),
        ("d_pos", pa.string()),
        ("weather", pa.string()),
    ]
)


class PoolError(FairweatherError):
    """The pool cannot be listed: missing path, unreadable manifest, or no images at all."""


@dataclass
class PoolListing:
    """The files of a pool and everything the listing did not take, so no file disappears silently.

    items: ``{"uri", "weather_hint"}`` rows, sorted and unique by URI.
    skipped: reason -> URIs (or manifest entries) not listed: ``hidden``, ``suffix``, ``dangling_link``,
    ``link_outside_root``, ``seen_twice`` (a directory or file reached again through a link), ``not_a_file``,
    ``unreadable_folder``, ``manifest_empty_uri``, ``duplicate``.
    bad_names: files whose names are not UTF-8 (escaped names): the job records each as a failure.
    """

    items: list[dict[str, str | None]]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    bad_names: list[str] = field(default_factory=list)

    @property
    def listed(self) -> int:
        """Files the job accounts for: the items plus the files it cannot even name."""
        return len(self.items) + len(self.bad_names)

    def summary(self) -> str:
        """``"12 listed, 3 not listed (1 hidden, 2 suffix)"``: the line that explains a count to the user."""
        skipped = sum(len(v) for v in self.skipped.values())
        reasons = ", ".join(f"{len(v)} {k}" for k, v in sorted(self.skipped.items()))
        return f"{self.listed} listed, {skipped} not listed" + (f" ({reasons})" if reasons else "")


def folder_hint(uri: str) -> str | None:
    """The weather a file's folder names (``rain/``, ``hazy/``, ... :data:`HINT_FOLDERS`), else None."""
    parent = PurePosixPath(uri.partition("://")[2] or uri).parent.name.lower()
    return HINT_FOLDERS.get(parent)


def _read_manifest(uri: str, listing: PoolListing, roots: tuple[str, ...]) -> list[dict[str, str | None]]:
    """Rows of a manifest; relative URIs in it are resolved against the manifest's folder.

    With ``roots`` (``data.roots``), a manifest naming any file outside them is refused as a whole: such a
    manifest was written by mistake or to read what the job must not (``../../etc/passwd``, another bucket).
    """
    fs, path = filesystem_for(uri)
    suffix = PurePosixPath(path).suffix.lower()
    with fs.open_input_file(path) as source:
        if suffix == ".txt":
            lines = [line.strip() for line in source.read().decode("utf-8").splitlines()]
            table = pa.table({"uri": [line for line in lines if line and not line.startswith("#")]})
        elif suffix == ".csv":
            table = pacsv.read_csv(source)
        else:
            table = pq.read_table(source)
    if "uri" not in table.column_names:
        raise PoolError(f"manifest {uri} has no 'uri' column (columns: {table.column_names})")
    hint_column = next((c for c in ("weather_hint", "weather") if c in table.column_names), None)
    hints = table.column(hint_column).to_pylist() if hint_column else [None] * table.num_rows
    folder = str(PurePosixPath(path).parent)
    rows = []
    for number, (item, hint) in enumerate(zip(table.column("uri").to_pylist(), hints, strict=True), 1):
        if not item:
            listing.skipped.setdefault("manifest_empty_uri", []).append(f"{uri} row {number}")
            continue
        item = str(item)
        if "://" not in item and not item.startswith("/"):
            item = full_uri(uri, f"{folder}/{item}")
        hint = str(hint).strip().lower() if hint is not None and str(hint).strip() else folder_hint(item)
        rows.append({"uri": item, "weather_hint": hint})
    outside = [row["uri"] for row in rows if not within_roots(str(row["uri"]), roots)]
    if outside:
        more = f" and {len(outside) - _NAMED_SKIPS} more" if len(outside) > _NAMED_SKIPS else ""
        raise PoolError(
            f"manifest {uri} names {len(outside)} file(s) outside data.roots={list(roots)}: "
            f"{', '.join(map(str, outside[:_NAMED_SKIPS]))}{more}"
        )
    return rows


def list_pool(
    pool: str, *, follow_links_out: bool = False, roots: tuple[str, ...] = (), what: str = "pool"
) -> PoolListing:
    """The files of a folder, glob or manifest (see :class:`PoolListing`); never leaves a file unaccounted for.

    A folder lists its image-suffixed files (the bytes decide the real format later); a glob lists exactly what
    it matches; an existing path is never a glob, even with ``[`` or ``*`` in its name. Raises
    :class:`PoolError` if the path does not exist or lists no file, or if a manifest names a file outside
    ``roots`` (when given). ``what`` names the listing in those errors (``pool``, ``test set``).
    """
    listing = PoolListing(items=[])
    try:
        rows = _list_rows(pool, follow_links_out, listing, roots, what)
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as err:  # missing, permission, credentials, bad CSV
        raise PoolError(f"{what} {pool!r} cannot be listed: {err}") from err
    unique: dict[str, dict[str, str | None]] = {}
    for row in rows:
        row["weather_hint"] = row["weather_hint"] or folder_hint(str(row["uri"]))
        if str(row["uri"]) in unique:
            listing.skipped.setdefault("duplicate", []).append(str(row["uri"]))
        unique[str(row["uri"])] = row
    for reason, skipped in sorted(listing.skipped.items()):
        more = f" and {len(skipped) - _NAMED_SKIPS} more" if len(skipped) > _NAMED_SKIPS else ""
        log.warning(
            "listing skipped %d (%s): %s%s", len(skipped), reason, ", ".join(skipped[:_NAMED_SKIPS]), more
        )
    if not unique and not listing.bad_names:
        raise PoolError(f"{what} {pool!r} lists no image files ({listing.summary()})")
    listing.items = [unique[uri] for uri in sorted(unique)]
    return listing


def _list_rows(
    pool: str, follow_links_out: bool, listing: PoolListing, roots: tuple[str, ...], what: str
) -> list[dict[str, str | None]]:
    """Unsorted ``{"uri", "weather_hint"}`` rows of a glob, folder or manifest (hints from the manifest only)."""
    if is_glob(pool):
        found = list_glob(pool, follow_links_out=follow_links_out)
    else:
        fs, path = filesystem_for(pool)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            if PurePosixPath(path).suffix.lower() not in _MANIFEST_SUFFIXES:
                raise PoolError(
                    f"{what} {pool!r} is a file but not a manifest ({', '.join(_MANIFEST_SUFFIXES)})"
                )
            return _read_manifest(pool, listing, roots)
        if info.type != pafs.FileType.Directory:
            raise PoolError(f"{what} {pool!r} does not exist")
        found = list_files(pool, suffixes=IMAGE_SUFFIXES, follow_links_out=follow_links_out)
        _drop_own_manifest(found.skipped, full_uri(pool, f"{path.rstrip('/')}/{POOL_MANIFEST}"))
    listing.skipped, listing.bad_names = found.skipped, found.bad_names
    return [{"uri": uri, "weather_hint": None} for uri in found.files]


def _drop_own_manifest(skipped: dict[str, list[str]], manifest: str) -> None:
    """A pool folder's own :data:`POOL_MANIFEST` (``fairweather synth`` writes it beside the images) is not a
    skipped file: it is the folder's index, not something the user expected listed."""
    rest = [uri for uri in skipped.get("suffix", []) if uri != manifest]
    if rest:
        skipped["suffix"] = rest
    else:
        skipped.pop("suffix", None)


def _failed(uri: str, hint: str | None, stage: str, error_type: str, message: str) -> dict:
    return {"uri": uri, "weather_hint": hint, "status": "failed", "error_stage": stage,
            "error_type": error_type, "message": message}  # fmt: skip


def read_decode_one(
    uri: str, hint: str | None, *, max_pixels: int, short_side: int, done: frozenset[str]
) -> dict:
    """One ``ITEM_SCHEMA`` row for ``uri``; never raises for a bad file (the failure becomes the row)."""
    try:
        data = read_bytes(uri)
    except (OSError, ValueError) as err:  # missing, permission, network: pyarrow raises OSError subclasses
        return _failed(uri, hint, "read", type(err).__name__, str(err))
    image_id = hashlib.sha256(data).hexdigest()
    row = {"uri": uri, "weather_hint": hint, "image_id": image_id, "bytes": len(data)}
    if image_id in done:
        # Already labeled under this model and prompt versions: not even decoded.
        return {**row, "status": "skipped"}
    try:
        rgb = decode_image(data, max_pixels=max_pixels)
    except Exception as err:  # PIL plugins can raise anything on hostile bytes; one file must not end the job
        reason = err.reason if isinstance(err, ImageDecodeError) else f"crash:{type(err).__name__}"
        return {**row, **_failed(uri, hint, "decode", reason, str(err))}
    small = np.ascontiguousarray(limit_short_side(rgb, short_side))
    return {**row, "status": "ok", "height": rgb.shape[0], "width": rgb.shape[1], "pixels": small.tobytes(),
            "pixel_height": small.shape[0], "pixel_width": small.shape[1]}  # fmt: skip


def read_decode_batch(batch: pa.Table, *, max_pixels: int, short_side: int, done: frozenset[str]) -> pa.Table:
    """Ray Data map: ``{uri, weather_hint}`` rows -> ``ITEM_SCHEMA`` rows, one per input row."""
    rows = [
        read_decode_one(uri, hint, max_pixels=max_pixels, short_side=short_side, done=done)
        for uri, hint in zip(
            batch.column("uri").to_pylist(), batch.column("weather_hint").to_pylist(), strict=True
        )
    ]
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


def item_pixels(row: dict) -> np.ndarray:
    """The ``(pixel_height, pixel_width, 3)`` uint8 RGB array of an ``ok`` row."""
    shape = (row["pixel_height"], row["pixel_width"], 3)
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(shape)

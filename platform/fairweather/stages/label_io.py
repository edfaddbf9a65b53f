"""The labeling job's files and tables: list a pool of image URIs, read + hash + decode them, write the results.

A pool is a folder, a glob (``data/**/*.jpg``) or a manifest (``.txt`` one URI per line; ``.csv``/``.parquet``
with a ``uri`` column and an optional ``weather``/``weather_hint`` column), on local disk or any pyarrow
filesystem (``s3://``, ``gs://``, ``file://``). Only URIs are listed on the driver; bytes are read in the workers.
:func:`read_decode_batch` turns every URI into exactly one row: ``ok`` (pixels attached), ``skipped`` (already
labeled) or ``failed`` (with the reason), so that no file can vanish between listing and the tables;
:class:`ResultWriter` turns the labeled rows into ``labels`` / ``errors`` / ``pool`` parts on the driver.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.tables import TableStore, filesystem_for
from fairweather.contracts.vocab import IMAGE_SUFFIXES
from fairweather.imaging import ImageDecodeError, decode_image, limit_short_side

log = logging.getLogger(__name__)

#: Failed files named one by one on the console; the rest are counted (all of them are in the errors table).
REPORTED_FAILURES = 20

#: Folder name -> the weather hint it gives an image when the manifest has none.
HINT_FOLDERS = {
    **{name: name for name in ("rain", "haze", "snow", "clear")},
    **{"rainy": "rain", "hazy": "haze", "fog": "haze", "foggy": "haze", "snowy": "snow", "clean": "clear"},
}
_MANIFEST_SUFFIXES = (".txt", ".csv", ".parquet")
_GLOB_CHARS = re.compile(r"[*?\[]")

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


@functools.lru_cache(maxsize=16)
def _cloud_filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    # One filesystem per bucket and worker: building an S3 filesystem may itself cost a request (region lookup).
    return pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a URI; bucket-style schemes reuse a cached filesystem."""
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in ("s3", "gs", "gcs"):
        return _cloud_filesystem(scheme, rest.split("/", 1)[0]), rest
    return filesystem_for(uri)


def _full_uri(uri: str, path: str) -> str:
    """The URI of ``path`` on the same filesystem as ``uri`` (local paths stay plain paths)."""
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return path
    return f"file://{path}" if scheme == "file" else f"{scheme}://{path.lstrip('/')}"


def _folder_hint(uri: str) -> str | None:
    parent = PurePosixPath(uri.partition("://")[2] or uri).parent.name.lower()
    return HINT_FOLDERS.get(parent)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell glob -> regex: ``**/`` spans folders, ``*`` and ``?`` stay within one path component."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _list_files(fs: pafs.FileSystem, base: str) -> list[str]:
    """Files below ``base``, recursively, skipping hidden files and folders (``.DS_Store``, ``.cache/``)."""
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    base = base.rstrip("/")
    return [
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and not any(part.startswith(".") for part in PurePosixPath(info.path[len(base) :]).parts)
    ]


def _read_manifest(fs: pafs.FileSystem, path: str, uri: str) -> list[dict[str, str | None]]:
    """Rows of a manifest; relative URIs in it are resolved against the manifest's folder."""
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
    for item, hint in zip(table.column("uri").to_pylist(), hints, strict=True):
        if not item:
            continue
        item = str(item)
        if "://" not in item and not item.startswith("/"):
            item = _full_uri(uri, f"{folder}/{item}")
        hint = str(hint).strip().lower() if hint is not None and str(hint).strip() else _folder_hint(item)
        rows.append({"uri": item, "weather_hint": hint})
    return rows


def _list_glob(pool: str, wildcard: int) -> list[str]:
    """URIs matching a glob; the folder before the first wildcard is listed recursively and filtered."""
    cut = pool.rfind("/", 0, wildcard)
    base, rest = (pool[:cut] or "/", pool[cut + 1 :]) if cut >= 0 else (".", pool)
    fs, base_path = _open(base)
    pattern = _glob_regex(base_path.rstrip("/") + "/" + rest)
    return [_full_uri(pool, p) for p in _list_files(fs, base_path) if pattern.match(p)]


def list_pool(pool: str) -> list[dict[str, str | None]]:
    """``[{"uri", "weather_hint"}, ...]`` for a folder, glob or manifest; sorted, unique by URI.

    A folder lists its image-suffixed files (the bytes decide the real format later); a glob lists exactly what
    it matches. Raises :class:`PoolError` if the path does not exist or lists no file.
    """
    try:
        rows = _list_rows(pool)
    except (OSError, pa.ArrowInvalid) as err:  # missing, permission, credentials, bad CSV
        raise PoolError(f"pool {pool!r} cannot be listed: {err}") from err
    for row in rows:
        row["weather_hint"] = row["weather_hint"] or _folder_hint(str(row["uri"]))
    unique = {str(row["uri"]): row for row in rows}
    if not unique:
        raise PoolError(f"pool {pool!r} lists no image files")
    return [unique[uri] for uri in sorted(unique)]


def _list_rows(pool: str) -> list[dict[str, str | None]]:
    """Unsorted ``{"uri", "weather_hint"}`` rows of a glob, folder or manifest (hints from the manifest only)."""
    wildcard = _GLOB_CHARS.search(pool)
    if wildcard:
        return [{"uri": uri, "weather_hint": None} for uri in _list_glob(pool, wildcard.start())]
    fs, path = _open(pool)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        uris = [_full_uri(pool, p) for p in _list_files(fs, path)]
        return [
            {"uri": u, "weather_hint": None}
            for u in uris
            if PurePosixPath(u).suffix.lower() in IMAGE_SUFFIXES
        ]
    if info.type != pafs.FileType.File:
        raise PoolError(f"pool {pool!r} does not exist")
    if PurePosixPath(path).suffix.lower() not in _MANIFEST_SUFFIXES:
        raise PoolError(f"pool {pool!r} is a file but not a manifest ({', '.join(_MANIFEST_SUFFIXES)})")
    return _read_manifest(fs, path, pool)


def read_bytes(uri: str) -> bytes:
    """The whole file at ``uri`` (local path or filesystem URI)."""
    fs, path = _open(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


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


class ResultWriter:
    """Buffers result rows and writes them as ``labels`` / ``errors`` / ``pool`` parts; counts every outcome."""

    def __init__(self, store: TableStore, label_columns: dict[str, str], flush_rows: int) -> None:
        """label_columns: the string columns every ``labels`` row of this job shares (model id, prompt versions)."""
        self.store, self.label_columns, self.flush_rows = store, label_columns, flush_rows
        self.pending: list[pa.Table] = []
        self.counts = {"labeled": 0, "skipped": 0, "failed": 0}
        self.seen: set[str] = set()
        self.reported = 0  # failed files named on the console so far

    def add(self, batch: pa.Table) -> None:
        for status, count in zip(*pc.value_counts(batch.column("status")).flatten(), strict=True):
            self.counts[status.as_py()] += count.as_py()
        self.seen.update(batch.column("uri").to_pylist())
        self.pending.append(batch)
        if sum(t.num_rows for t in self.pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        rows = pa.concat_tables(self.pending)
        self.pending = []
        now = pa.scalar(datetime.now(timezone.utc), pa.timestamp("us", tz="UTC"))
        labeled = rows.filter(pc.equal(rows.column("status"), "labeled"))
        for name, value in self.label_columns.items():
            labeled = labeled.append_column(name, pa.array([value] * labeled.num_rows, pa.string()))
        self.store.write("labels", labeled.append_column("labeled_at", pa.array([now] * labeled.num_rows)))
        self.store.write("pool", rows.filter(pc.is_valid(rows.column("width"))))
        failed = rows.filter(pc.equal(rows.column("status"), "failed")).rename_columns(
            {"error_stage": "stage"}
        )
        self._report(failed)
        self.store.write("errors", failed.append_column("time", pa.array([now] * failed.num_rows)))

    def _report(self, failed: pa.Table) -> None:
        """Name each failed file and its reason on the console, up to REPORTED_FAILURES per job."""
        for row in failed.select(["uri", "error_type", "message"]).to_pylist():
            self.reported += 1
            if self.reported <= REPORTED_FAILURES:
                kind, message = row["error_type"], row["message"]
                reason = message if message.startswith(f"{kind}:") else f"{kind}: {message}"
                log.warning("not labeled: %s (%s)", row["uri"], reason)
            elif self.reported == REPORTED_FAILURES + 1:
                log.warning("more files failed; every one is in the errors table under %s", self.store.root)

    def add_lost(self, uris: list[str], reason: str) -> None:
        """Rows Ray Data dropped after its retries (a crashing actor): one ``errors`` row each."""
        self.counts["failed"] += len(uris)
        self.seen.update(uris)
        lost = [
            {"uri": u, "status": "failed", "error_stage": "label", "error_type": "lost", "message": reason}
            for u in uris
        ]
        self.pending.append(pa.Table.from_pylist(lost, schema=RESULT_SCHEMA))
